# The application image used by compose.yaml: the chem-persistence command and rq-dashboard.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY domain ./domain
COPY eventlog ./eventlog
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
# Editable install: migrations/ is found next to the packages, as in a checkout.
RUN pip install --no-cache-dir -e '.[dashboard]'
USER nobody
ENTRYPOINT ["chem-persistence"]
CMD ["worker"]
