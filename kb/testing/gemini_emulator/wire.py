"""JSON shapes on the wire: error envelopes, File and Operation resources, embedding results.

proto3 JSON conventions throughout: lowerCamelCase, int64 as strings, RFC 3339 timestamps, zero/unset omitted.
"""

import hashlib
import json
from typing import Any

from .clock import rfc3339
from .errors import ApiError
from .files import StoredFile
from .generation import Generation
from .jobs import CANCELLED, FAILED, SUCCEEDED, BatchJob, ItemResult
from .models import ModelRule

EMBED_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
GENERATE_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
CANCELLED_CODE = 1  # google.rpc.Code.CANCELLED: what a cancelled operation's error carries (batch-api docs)
_HTML_502 = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 502 (Server Error)!!1</title>\n"
    "  <p><b>502.</b> <ins>That's an error.</ins>\n  <p>The server encountered a temporary error and could "
    "not complete your request.<p>Please try again in 30 seconds.  <ins>That's all we know.</ins>\n"
)


def to_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message, "status": error.status}
    if error.details:
        body["details"] = error.details
    return {"error": body}


def unknown_url_page(path: str) -> str:
    """Google's front end on a URL nothing serves (the body of a 404, in HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
        "  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n"
        f"  <p>The requested URL <code>{path}</code> was not found on this server.  "
        "<ins>That\u2019s all we know.</ins>\n"
    )


def html_error_page(status: int) -> str:
    return _HTML_502.replace("502", str(status))


def values_json(values: Any) -> dict[str, Any]:
    return {"values": values.tolist()}


def file_resource(stored: StoredFile, base_url: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"name": stored.name}
    if stored.display_name:
        resource["displayName"] = stored.display_name
    resource |= {
        "mimeType": stored.mime_type,
        "sizeBytes": str(len(stored.data)),
        "createTime": rfc3339(stored.create_time),
        "updateTime": rfc3339(stored.create_time),
        "expirationTime": rfc3339(stored.expire_time),
        "sha256Hash": stored.sha256_hash,
        "uri": f"{base_url}/v1beta/{stored.name}",
    }
    if stored.source == "GENERATED":
        resource["downloadUri"] = f"{base_url}/download/v1beta/{stored.name}:download?alt=media"
    resource |= {"state": stored.state, "source": stored.source}
    return resource


def model_resource(rule: ModelRule) -> dict[str, Any]:
    if rule.kind == "generation":
        methods = ["generateContent", "countTokens"] + (["batchGenerateContent"] if rule.batch else [])
        description = "A text model served by the local Gemini emulator (deterministic answers)."
    else:
        methods = ["embedContent", "countTextTokens", "countTokens"] + (
            ["asyncBatchEmbedContent"] if rule.batch else []
        )
        description = "An embedding model served by the local Gemini emulator."
    return {
        "name": f"models/{rule.name}",
        "version": rule.name.rsplit("-", 1)[-1],
        "displayName": rule.display_name or rule.name,
        "description": description,
        "inputTokenLimit": rule.max_input_tokens,
        "outputTokenLimit": rule.max_output_tokens,
        "supportedGenerationMethods": methods,
    }


def generate_response(answer: Generation, model: str, response_id: str) -> dict[str, Any]:
    """A GenerateContentResponse: one candidate (none for a blocked prompt), usageMetadata, modelVersion."""
    response: dict[str, Any] = {}
    if answer.blocked is not None:
        response["promptFeedback"] = {"blockReason": answer.blocked}
    else:
        candidate: dict[str, Any] = {}
        if answer.text:
            candidate["content"] = {"parts": [{"text": answer.text}], "role": "model"}
        candidate |= {"finishReason": answer.finish_reason, "index": 0}
        response["candidates"] = [candidate]
    usage: dict[str, Any] = {"promptTokenCount": answer.prompt_tokens}
    if answer.output_tokens:
        usage["candidatesTokenCount"] = answer.output_tokens
    usage["totalTokenCount"] = answer.prompt_tokens + answer.output_tokens
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}]
    response |= {"usageMetadata": usage, "modelVersion": model, "responseId": response_id}
    return response


def operation(job: BatchJob, *, with_output: bool = True) -> dict[str, Any]:
    """A batch as a google.longrunning.Operation; listings leave the output out, like the live API."""
    batch_type = EMBED_BATCH_TYPE if job.work == "embed" else GENERATE_BATCH_TYPE
    metadata: dict[str, Any] = {"@type": batch_type, "model": f"models/{job.model}"}
    if job.display_name:
        metadata["displayName"] = job.display_name
    shows_output = with_output and job.state == SUCCEEDED and job.output is not None
    if shows_output and not job.plan.output_only_in_response:
        metadata["output"] = job.output
    metadata |= {"createTime": rfc3339(job.create_time), "updateTime": rfc3339(job.update_time)}
    if job.end_time is not None:
        metadata["endTime"] = rfc3339(job.end_time)
    stats = batch_stats(job)
    if stats:
        metadata["batchStats"] = stats
    metadata |= {"state": job.state, "name": job.name}
    result: dict[str, Any] = {"name": job.name, "metadata": metadata}
    if job.done:
        result["done"] = True
    if shows_output and job.output is not None:
        result["response"] = {"@type": batch_type, **job.output}
    if job.state in (FAILED, CANCELLED) and job.error is not None:
        result["error"] = {"code": job.error[0], "message": job.error[1]}
    return result


def batch_stats(job: BatchJob) -> dict[str, str]:
    """EmbedContentBatchStats, int64 as strings, zeros omitted."""
    total = len(job.entries)
    counts = {"requestCount": total, "pendingRequestCount": total}
    if job.state == SUCCEEDED and job.processed is not None and not job.plan.stats_lag:
        failed = sum(1 for result in job.processed if result.error is not None)
        counts = {
            "requestCount": total,
            "successfulRequestCount": total - failed,
            "failedRequestCount": failed,
        }
    return {name: str(count) for name, count in counts.items() if count}


def result_item(result: ItemResult, job: BatchJob) -> dict[str, Any]:
    """One InlinedEmbedContentResponse or InlinedResponse (without its key/metadata)."""
    if result.error is not None:
        error: dict[str, Any] = {"code": result.error[0], "message": result.error[1]}
        if job.plan.item_error_details is not None:
            error["details"] = list(job.plan.item_error_details)
        return {"error": error}
    if result.generation is not None:
        seed = f"{job.job_id}|{result.entry.key}|{result.text}".encode()
        response_id = hashlib.sha256(seed).hexdigest()[:22]
        return {"response": generate_response(result.generation, job.model, response_id)}
    response: dict[str, Any] = {
        "embedding": values_json(result.values),
        "tokenCount": str(result.token_count),
    }
    if job.plan.usage_metadata or job.reports_usage:
        response["usageMetadata"] = {"promptTokenCount": result.token_count}
    return {"response": response}


def inline_output(results: list[ItemResult], job: BatchJob) -> dict[str, Any]:
    items = []
    for result in results:
        item = result_item(result, job)
        if result.entry.metadata is not None and job.plan.echo_metadata:
            item["metadata"] = result.entry.metadata
        items.append(item)
    return {"inlinedResponses": {"inlinedResponses": items}}


def output_jsonl(results: list[ItemResult], job: BatchJob) -> bytes:
    """The responses file: compact JSON lines with `key` after the response, as the live service writes."""
    lines = []
    for result in results:
        line = result_item(result, job)
        if result.entry.key is not None:
            line["key"] = result.entry.key
        lines.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode() if lines else b""
