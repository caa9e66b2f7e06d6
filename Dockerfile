# Image for the worker, beat, the one-shot migration and the health exporter.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAR_DIR=/var/lib/settlement-workers

RUN useradd --create-home --uid 10001 worker \
    && mkdir -p /var/lib/settlement-workers \
    && chown worker /var/lib/settlement-workers

WORKDIR /srv/settlement-workers
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY tasks ./tasks
COPY outbox ./outbox
COPY settlement ./settlement
COPY health ./health
COPY migrations ./migrations
# Editable, so the code runs from this folder, where migrations/ and alembic.ini are.
RUN pip install --no-cache-dir -e .

USER worker
CMD ["celery", "-A", "app", "worker", "--loglevel", "INFO"]
