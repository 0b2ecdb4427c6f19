# syntax=docker/dockerfile:1
# The sympozium-schedule controller image: `sympozium-schedule run --kubernetes` by default.
#   docker build -t ghcr.io/sympozium-ai/sympozium-schedule:0.1.0 .
# The Deployment (src/sympozium_schedule/manifests/install/) runs it as user 65532 with a
# read-only root filesystem.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Wheels for the project and every dependency, so the final stage needs no build tools.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# The data directory matters only to the embedded mode (`run` without --kubernetes); /tmp is
# the one writable place under the Deployment's read-only root filesystem.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYMPOZIUM_DATA_DIR=/tmp/sympozium-schedule
# Bind-mounted, so the wheels never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels sympozium-schedule \
    && groupadd --gid 65532 sympozium \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sympozium
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["sympozium-schedule"]
CMD ["run", "--kubernetes"]
