# conveyor-asgi server image.
#
#   docker build -t conveyor-asgi .
#   docker run -p 8989:8989 -e CONVEYOR_SERVER_TOKEN=change-me conveyor-asgi
#
# Every CONVEYOR_* variable configures the server (CONVEYOR_HOST, CONVEYOR_PORT,
# CONVEYOR_WORKERS and CONVEYOR_LOG_LEVEL included).

ARG PYTHON_IMAGE=python:3.12-slim

# Build stage: install the package and its dependencies into a virtual
# environment that the final stage copies whole, leaving pip's work behind.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# README* may be absent from a source checkout; the package builds without it.
COPY pyproject.toml README* ./
COPY conveyor_asgi ./conveyor_asgi
RUN python -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install --no-cache-dir ".[redis]"

# Final stage: the same Python, the virtual environment, an unprivileged user.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin conveyor
COPY --from=build /opt/conveyor /opt/conveyor
ENV PATH="/opt/conveyor/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVEYOR_HOST=0.0.0.0 \
    CONVEYOR_PORT=8989
USER 10001:10001
WORKDIR /tmp
EXPOSE 8989
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "conveyor_asgi.healthcheck"]
CMD ["python", "-m", "conveyor_asgi"]
