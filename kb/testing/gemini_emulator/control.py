"""The control API under `/__emulator/`, for tests that drive the emulator from another process.

No API key, not logged. JSON in, JSON out; a bad control request is a 400 with the reason.

    GET  log                  every logged request          POST reset_log
    GET  faults               scripted faults               POST faults {Fault fields}    DELETE faults
    GET  clock                emulated time                 POST clock {"advance": s} or {"set": t}
    POST job_plan {JobPlan fields, "item_errors": {"error_texts_containing": "X", "code": 3, "message": "?"}}
         or {"next": [plans...]} to plan the next jobs in order
    GET  billing              billed texts and token totals
    GET  jobs                 batch jobs and their states   POST force_state {"name": ..., "state": ...}
    POST models {ModelRegistry.add arguments, "name": ...}  POST shut_down {"model": ...}
    GET/POST settings         `state.Settings`
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from .clock import rfc3339
from .errors import ApiError, invalid_argument, not_found
from .faults import Fault
from .jobs import JobPlan, TextsContaining
from .messages import HttpResponse, error_response, json_response
from .parsing import parse_json
from .routing import Target
from .state import EmulatorState, public_state

Handler = Callable[[EmulatorState, Any], Any]


def handle(state: EmulatorState, method: str, target: Target, body: bytes) -> HttpResponse:
    handler = _HANDLERS.get((method, (target.control or "").strip("/")))
    try:
        if handler is None:
            raise not_found(f"No control endpoint {method} /__emulator/{target.control}.")
        payload = parse_json(body)
        with state.lock:
            return json_response(handler(state, payload))
    except ApiError as error:
        return error_response(error)
    except (TypeError, ValueError, KeyError) as error:
        return error_response(invalid_argument(f"Bad control request: {error}"))


def job_plan_from_json(fields: dict[str, Any]) -> JobPlan:
    """A JobPlan from JSON; item errors as {"error_texts_containing": marker, "code": 3, "message": ...}."""
    fields = dict(fields)
    rule = fields.pop("item_errors", None)
    if rule is None and "error_texts_containing" in fields:
        rule = {
            key: fields.pop(key) for key in ("error_texts_containing", "code", "message") if key in fields
        }
    if rule is not None:
        rule = dict(rule)
        fields["item_errors"] = TextsContaining(rule.pop("error_texts_containing"), **rule)
    return JobPlan(**fields)


def _log(state: EmulatorState, _: Any) -> Any:
    return {"requests": [dataclasses.asdict(entry) for entry in state.log]}


def _reset_log(state: EmulatorState, _: Any) -> Any:
    state.log.clear()
    return {}


def _faults(state: EmulatorState, _: Any) -> Any:
    return {"faults": [dataclasses.asdict(fault) for fault in state.faults.all()]}


def _add_fault(state: EmulatorState, payload: Any) -> Any:
    return dataclasses.asdict(state.faults.add(Fault(**payload)))


def _clear_faults(state: EmulatorState, _: Any) -> Any:
    state.faults.clear()
    return {}


def _clock(state: EmulatorState, _: Any) -> Any:
    now = state.clock.now()
    return {"now": now, "time": rfc3339(now)}


def _move_clock(state: EmulatorState, payload: Any) -> Any:
    if "advance" in payload:
        state.clock.advance(float(payload["advance"]))
    elif "set" in payload:
        state.clock.set(float(payload["set"]))
    else:
        raise ValueError('expected {"advance": seconds} or {"set": timestamp}')
    return _clock(state, payload)


def _job_plan(state: EmulatorState, payload: Any) -> Any:
    if "next" in payload:
        state.planned.extend(job_plan_from_json(plan) for plan in payload["next"])
    else:
        state.job_plan = job_plan_from_json(payload)
    return {"planned": len(state.planned)}


def _billing(state: EmulatorState, _: Any) -> Any:
    totals: dict[str, dict[str, int]] = {}
    for record in state.billing:
        by_mode = totals.setdefault(record.model, {})
        by_mode[record.mode] = by_mode.get(record.mode, 0) + record.tokens
    records = [dataclasses.asdict(record) for record in state.billing]
    return {"records": records, "tokens": totals, "totalTokens": sum(r.tokens for r in state.billing)}


def _jobs(state: EmulatorState, _: Any) -> Any:
    state.refresh()
    return {"jobs": [public_state(job) for job in state.batch_listing()]}


def _force_state(state: EmulatorState, payload: Any) -> Any:
    return public_state(state.force_state(payload["name"], payload["state"]))


def _add_model(state: EmulatorState, payload: Any) -> Any:
    arguments = dict(payload)
    return dataclasses.asdict(state.models.add(arguments.pop("name"), **arguments))


def _shut_down(state: EmulatorState, payload: Any) -> Any:
    state.models.shut_down(payload["model"])
    return {}


def _settings(state: EmulatorState, _: Any) -> Any:
    return dataclasses.asdict(state.settings)


def _change_settings(state: EmulatorState, payload: Any) -> Any:
    known = {settings_field.name for settings_field in dataclasses.fields(state.settings)}
    unknown = set(payload) - known
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    for name, value in payload.items():
        setattr(state.settings, name, tuple(value) if isinstance(value, list) else value)
    return _settings(state, payload)


_HANDLERS: dict[tuple[str, str], Handler] = {
    ("GET", "log"): _log,
    ("POST", "reset_log"): _reset_log,
    ("GET", "faults"): _faults,
    ("POST", "faults"): _add_fault,
    ("DELETE", "faults"): _clear_faults,
    ("GET", "clock"): _clock,
    ("POST", "clock"): _move_clock,
    ("POST", "job_plan"): _job_plan,
    ("GET", "billing"): _billing,
    ("GET", "jobs"): _jobs,
    ("POST", "force_state"): _force_state,
    ("POST", "models"): _add_model,
    ("POST", "shut_down"): _shut_down,
    ("GET", "settings"): _settings,
    ("POST", "settings"): _change_settings,
}
