"""Stage export: one annotator's train/dev split → Hugging Face dataset (Arrow + Parquet) and card."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import disable_progress_bars

from synthllm import export
from synthllm.errors import InputDataError
from synthllm.io import read_jsonl
from synthllm.stages._common import entry, params_of, parser

SPLIT_COLUMNS = ("id", "premise", "hypothesis", "label")


def _json(path: Path) -> dict:
    if not path.is_file():
        raise InputDataError(f"{path}: not found (run the stage that produces it: dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def _push(dd, card: str, repo_id: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    # The card goes up first: push_to_hub then merges its dataset_info/configs into our YAML
    # header instead of writing a bare card of its own.
    api.upload_file(
        path_or_fileobj=card.encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Dataset card",
    )
    dd.push_to_hub(repo_id)


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--split", type=Path, required=True, help="folder with train.jsonl and dev.jsonl")
    p.add_argument("--annotated", type=Path, required=True, help="the annotator's labelled pool (.jsonl)")
    p.add_argument("--generate-stats", type=Path, required=True, help="metrics/generate.json")
    p.add_argument("--annotator-metrics", type=Path, required=True, help="metrics/annotators/<name>.json")
    p.add_argument("--quality", type=Path, required=True, help="metrics/annotation_quality.json")
    p.add_argument("--name", required=True, help="annotator name (used in the card)")
    p.add_argument("--out", type=Path, required=True, help="folder for hf/, parquet/ and README.md")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        default=None,
        help="also upload the card and DatasetDict.push_to_hub(REPO_ID); needs network and a "
        "Hub token (HF_TOKEN or `hf auth login`); not covered by the offline tests",
    )
    args = p.parse_args(argv)
    params = params_of(args)
    gm = params.generator_model
    splits = {s: read_jsonl(args.split / f"{s}.jsonl", required=SPLIT_COLUMNS) for s in export.SPLITS}
    annotated = read_jsonl(args.annotated, required=("id",))
    inputs = export.CardInputs(
        name=args.name,
        splits=splits,
        annotated=annotated,
        generate_stats=_json(args.generate_stats),
        annotator_metrics=_json(args.annotator_metrics),
        quality=_json(args.quality),
        generator_model=gm.package if gm.source == "gguf_package" else gm.name_or_path,
        filters=params.generate.filters.model_dump(),
        task=params.task,
        gold=params.gold,
    )
    card = export.dataset_card(inputs)
    dd = export.build_dataset(
        splits,
        annotated,
        description=f"SynthLLM {inputs.title}, {args.name} labels",
        task=params.task,
        farstail=inputs.farstail,
    )
    disable_progress_bars()  # one bar per file is noise in `dvc repro` logs
    dd.save_to_disk(str(args.out / "hf"))
    (args.out / "parquet").mkdir(parents=True, exist_ok=True)
    for split in export.SPLITS:
        dd[split].to_parquet(str(args.out / "parquet" / f"{split}.parquet"))
    (args.out / "README.md").write_text(card, encoding="utf-8")
    if args.push_to_hub:
        _push(dd, card, args.push_to_hub)


if __name__ == "__main__":
    main()
