# One image for `engine run`, `engine worker` and `engine migrate`:
#   docker build -t trigger-engine .
#   docker run --rm -e DATABASE_URL=… -e REDIS_URL=… trigger-engine run
# The build stage makes a wheel (migrations and the rule schema are package data), the
# runtime stage installs it with its dependencies and nothing else: no compiler, no
# source tree, no tests.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY rules ./rules
COPY actions ./actions
COPY devkit ./devkit
COPY sql ./sql
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home engine
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# The example config reads DATABASE_URL, REDIS_URL, TELEGRAM_BOT_TOKEN, WEBHOOK_URL…
# from the environment; mount your own rules over /app/rules (or set ENGINE_RULES).
COPY config.example.yaml /app/config.yaml
COPY examples/rules /app/rules
ENV ENGINE_CONFIG=/app/config.yaml \
    ENGINE_RULES="[/app/rules]" \
    ENGINE_HTTP="{listen: '0.0.0.0:9187'}"
USER engine
EXPOSE 9187
# /healthz answers while `engine run` is alive; workers and the one-shot migrate have no
# HTTP endpoint, so docker-compose turns the check off for them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9187/healthz', timeout=3)"]
ENTRYPOINT ["engine"]
CMD ["run"]
