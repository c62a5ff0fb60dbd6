# The application image of compose.yaml: the chem-persistence command (worker, migrate, status,
# dlq, replay, dashboard), run as an unprivileged user (uid 10001).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY domain ./domain
COPY eventlog ./eventlog
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
# Editable install: migrations/ and alembic.ini are found next to the packages, as in a
# checkout. The files stay root's: the service user reads them and writes nothing.
RUN pip install -e '.[dashboard]' \
    && groupadd --system --gid 10001 chem \
    && useradd --system --uid 10001 --gid chem --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin chem
USER 10001:10001
# 9400: the worker's metrics (CHEM_METRICS_PORT in compose.yaml); 9181: the dashboard.
EXPOSE 9400 9181
ENTRYPOINT ["chem-persistence"]
CMD ["worker"]
