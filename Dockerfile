# The application image of compose.yaml: the chem-persistence command (worker, migrate, status,
# dlq, replay, dashboard), run as an unprivileged user (uid 10001).
#
# Two stages: the first builds the wheel from the checkout (chem_persistence/ links to the
# package folders, so they are copied with their layout), the second installs only that wheel,
# which carries the migrations: nothing of the checkout is left in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chem_persistence ./chem_persistence
COPY domain ./domain
COPY eventlog ./eventlog
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/chem_persistence-*.whl)[dashboard]" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 chem \
    && useradd --system --uid 10001 --gid chem --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin chem
USER 10001:10001
WORKDIR /tmp
# 9400: the worker's metrics (CHEM_METRICS_PORT in compose.yaml); 9181: the dashboard.
EXPOSE 9400 9181
ENTRYPOINT ["chem-persistence"]
CMD ["worker"]
