"""Typed errors whose messages say what is wrong and how to fix it."""


class SynthLLMError(Exception):
    """Base class: anything the user can act on."""


class ParamsError(SynthLLMError):
    """params.yaml is malformed, has an unknown key, a wrong type or an impossible value."""


class GoldDataError(SynthLLMError):
    """A gold data file is missing, corrupted, or lacks an expected column."""


class InputDataError(SynthLLMError):
    """A stage input (premises, annotations, ...) is empty or malformed."""


class BackendError(SynthLLMError):
    """A model backend cannot be constructed or cannot serve a request kind."""


class BudgetExceeded(SynthLLMError):
    """The configured spending cap would be crossed; the run stops with a resumable state."""


class UnansweredRequests(SynthLLMError):
    """Requests got no answer (outage, quota, timeouts) beyond what the params accept; every answer
    that did come back is cached, so a re-run sends only the rest."""
