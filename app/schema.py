"""The complete table metadata: importing this registers every model."""

from app.db import Base
from health import models as health_models
from outbox import models as outbox_models
from settlement import models as settlement_models

metadata = Base.metadata

__all__ = ["health_models", "metadata", "outbox_models", "settlement_models"]
