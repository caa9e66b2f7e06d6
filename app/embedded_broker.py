"""The embedded broker: kombu's filesystem transport with atomic message writes.

kombu 5.7's filesystem transport creates a message file and then writes it. A
consumer that lists the folder in between moves the still-empty file away and
fails to decode it, which stops the worker (seen with ``celery worker --beat``,
where beat writes while the consumer reads). Here each message is written to a
temporary name that consumers skip and then renamed into place. A rename is
atomic, so a consumer only ever reads complete files.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from app.settings import Settings

#: Seconds between two looks at the queue folder when it had no message. kombu's
#: default of 1 s let one outbox tick wait a whole second per poll cycle, so with a
#: poll interval near 1 s it expired before a worker took it.
POLLING_INTERVAL_SECONDS = 0.1
#: Suffix of a message file while it is written; consumers match only ``.<queue>.msg``.
PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final_path = os.path.join(self.data_folder_out, name)
        partial_path = final_path + PARTIAL_SUFFIX
        try:
            with open(partial_path, "wb") as partial:
                partial.write(str_to_bytes(dumps(message)))
            os.replace(partial_path, final_path)
        except OSError as exc:
            raise ChannelError(f"cannot add message file {final_path!r}: {exc}") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def use_atomic_filesystem_transport() -> None:
    """Make the ``filesystem://`` scheme resolve to :class:`Transport` in this process.

    kombu resolves a URL scheme through ``TRANSPORT_ALIASES``. Pointing the
    alias here keeps ``filesystem://`` in URLs and logs, and every connection
    (worker, beat, outbox publisher, control commands) gets the atomic writes.
    """
    TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"


def transport_options(settings: Settings) -> dict[str, Any]:
    """Return the embedded broker's folders under VAR_DIR, created if missing.

    Also installs the atomic transport. The filesystem transport is the
    embedded broker because it supports fanout exchanges, which
    ``celery inspect ping`` and other control commands need. kombu's
    SQLAlchemy transport has no broadcast, so those commands get no reply there.
    """
    use_atomic_filesystem_transport()
    root = Path(settings.var_dir).resolve() / "broker"
    queue_folder = root / "queue"
    control_folder = root / "control"
    for folder in (queue_folder, control_folder):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_folder),
        "data_folder_out": str(queue_folder),
        "control_folder": str(control_folder),
        "store_processed": False,
        "polling_interval": POLLING_INTERVAL_SECONDS,
    }
