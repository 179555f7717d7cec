"""The Files API state: resumable upload sessions and stored files (uploaded inputs, batch outputs)."""

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock
from .errors import ApiError, invalid_argument, not_found, permission_denied, resource_exhausted
from .parsing import UploadMeta

FILE_TTL_S = 48 * 3600.0
MAX_FILE_BYTES = 2 * 1024**3
PROJECT_QUOTA_BYTES = 20 * 1024**3
FILE_ID_LENGTH = 12
MAX_FILE_ID_LENGTH = 40
_FILE_ID = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@dataclass
class StoredFile:
    file_id: str
    mime_type: str
    data: bytes
    create_time: float
    source: str  # UPLOADED | GENERATED
    display_name: str | None = None
    state: str = "ACTIVE"

    @property
    def name(self) -> str:
        return f"files/{self.file_id}"

    @property
    def expire_time(self) -> float:
        return self.create_time + FILE_TTL_S

    @property
    def sha256_hash(self) -> str:
        """Base64 of the lowercase hex digest: that is what the live service sends (gemini-wire.md §8.3)."""
        hex_digest = hashlib.sha256(self.data).hexdigest()
        return base64.b64encode(hex_digest.encode()).decode()


@dataclass
class UploadSession:
    upload_id: str
    meta: UploadMeta
    api_version: str
    received: bytearray = field(default_factory=bytearray)


class FileStore:
    """Files by id. Expired files vanish lazily, on the next look-up."""

    def __init__(self, clock: Clock, new_id: Callable[[int], str]) -> None:
        self._clock = clock
        self._new_id = new_id
        self._files: dict[str, StoredFile] = {}
        self._uploads: dict[str, UploadSession] = {}

    def start_upload(self, meta: UploadMeta, api_version: str) -> UploadSession:
        size = meta.size_bytes or 0
        if size > MAX_FILE_BYTES:
            raise invalid_argument(f"File size {size} exceeds the maximum of {MAX_FILE_BYTES} bytes.", "file")
        if self.total_bytes() + size > PROJECT_QUOTA_BYTES:
            raise resource_exhausted("File storage quota of 20 GB for this project has been exceeded.")
        if meta.file_id is not None:
            self._check_new_id(meta.file_id)
        session = UploadSession(upload_id=self._new_id(48), meta=meta, api_version=api_version)
        self._uploads[session.upload_id] = session
        return session

    def upload_chunk(
        self, upload_id: str, offset: int | None, data: bytes, finalize: bool
    ) -> StoredFile | None:
        """Appends a chunk at `offset`; on finalize checks the declared size and stores the file."""
        session = self._uploads.get(upload_id)
        if session is None:
            raise not_found(f"Upload session {upload_id} was not found or is already finalized.")
        if offset is not None and offset != len(session.received):
            raise invalid_argument(
                f"Invalid upload offset {offset}: {len(session.received)} bytes received so far."
            )
        session.received.extend(data)
        if not finalize:
            return None
        del self._uploads[upload_id]
        declared = session.meta.size_bytes
        if declared is not None and declared != len(session.received):
            raise invalid_argument(
                f"Upload size mismatch: declared {declared} bytes, received {len(session.received)} bytes."
            )
        return self.add_uploaded(session.meta, bytes(session.received))

    def upload_session(self, upload_id: str) -> UploadSession | None:
        return self._uploads.get(upload_id)

    def add_uploaded(self, meta: UploadMeta, data: bytes) -> StoredFile:
        file_id = meta.file_id or self._new_id(FILE_ID_LENGTH)
        self._check_new_id(file_id)
        stored = StoredFile(
            file_id=file_id,
            mime_type=meta.mime_type or "application/octet-stream",
            data=data,
            create_time=self._clock.now(),
            source="UPLOADED",
            display_name=meta.display_name,
        )
        self._files[file_id] = stored
        return stored

    def add_generated(self, file_id: str, data: bytes, mime_type: str, create_time: float) -> StoredFile:
        stored = StoredFile(file_id, mime_type, data, create_time, source="GENERATED")
        self._files[file_id] = stored
        return stored

    def find(self, file_id: str) -> StoredFile | None:
        file_id = file_id.removeprefix("files/")
        stored = self._files.get(file_id)
        if stored is not None and stored.expire_time <= self._clock.now():
            del self._files[file_id]
            return None
        return stored

    def existed_at(self, file_id: str, moment: float) -> bool:
        """Whether the file was stored and unexpired at `moment` (deleted files are gone for good)."""
        stored = self._files.get(file_id.removeprefix("files/"))
        return stored is not None and stored.create_time <= moment < stored.expire_time

    def get(self, file_id: str) -> StoredFile:
        """Files are project-scoped, so an unknown id is a 403, not a 404 (as live)."""
        stored = self.find(file_id)
        if stored is None:
            bare = file_id.removeprefix("files/")
            raise permission_denied(
                f"You do not have permission to access the File {bare} or it may not exist."
            )
        return stored

    def delete(self, file_id: str) -> None:
        del self._files[self.get(file_id).file_id]

    def listing(self) -> list[StoredFile]:
        """Live files, newest first."""
        live = [stored for stored in list(self._files.values()) if self.find(stored.file_id) is not None]
        # Reversed first, so that files created at the same emulated instant also list newest first.
        return sorted(reversed(live), key=lambda stored: stored.create_time, reverse=True)

    def total_bytes(self) -> int:
        return sum(len(stored.data) for stored in self.listing())

    def _check_new_id(self, file_id: str) -> None:
        if len(file_id) > MAX_FILE_ID_LENGTH or not _FILE_ID.fullmatch(file_id):
            raise invalid_argument(
                f"* CreateFileRequest.file.name: File ID (name excluding 'files/') must be 1-40 lowercase "
                f"alphanumeric characters or dashes, not starting or ending with a dash: {file_id}",
                "file.name",
            )
        if self.find(file_id) is not None:
            raise ApiError(409, f"File files/{file_id} already exists.")
