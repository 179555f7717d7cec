"""A stateful, faithful local emulator of the Gemini API (embeddings, text generation, batches, files) for
google-genai 3.x.

    from kb.testing.gemini_emulator import GeminiEmulator, JobPlan, Fault

    with GeminiEmulator(api_key="test-key") as emu:
        client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=emu.base_url))
        emu.faults.add(Fault(route="batchEmbedContents", status=429, times=3, retry_delay="2s"))
        emu.job_plan = JobPlan(pending_s=60, running_s=300)
        ...
        emu.clock.advance(400)

Built like moto: pure state (`state`, `jobs`, `files`, `models`, `faults`) apart from the wire format
(`parsing`, `wire`) and the routes (`routing`, `api`, `control`, `server`). Imports nothing else from kb.
Run standalone with `python -m kb.testing.gemini_emulator --port 8765`.
"""

from .emulator import GeminiEmulator
from .errors import ApiError
from .faults import Fault
from .files import StoredFile
from .jobs import BatchJob, ItemResult, JobPlan, TextsContaining
from .models import ModelRule
from .records import BillingRecord, LoggedRequest
from .state import Settings

__all__ = [
    "ApiError",
    "BatchJob",
    "BillingRecord",
    "Fault",
    "GeminiEmulator",
    "ItemResult",
    "JobPlan",
    "LoggedRequest",
    "ModelRule",
    "Settings",
    "StoredFile",
    "TextsContaining",
]
