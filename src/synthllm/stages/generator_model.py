"""Stage generator_model: assemble/load the generator LM once and save it as a transformers folder."""

from __future__ import annotations

from pathlib import Path

from synthllm.generator_model import materialise
from synthllm.stages._common import entry, params_of, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="output model folder")
    args = p.parse_args(argv)
    materialise(params_of(args).generator_model, args.out)


if __name__ == "__main__":
    main()
