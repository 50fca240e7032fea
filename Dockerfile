# kimi-proxy as a container: the package installed into a venv in a build stage, copied into a
# slim image with no build tools, run as a non-root user. The entry point is the console script
# the tests run (`kimi-proxy serve`); SIGTERM drains (KIMI_DRAIN_SECONDS, default 120 s).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kimi_proxy ./kimi_proxy
RUN python -m venv /opt/kimi-proxy \
 && /opt/kimi-proxy/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kimi
COPY --from=build /opt/kimi-proxy /opt/kimi-proxy
ENV PATH="/opt/kimi-proxy/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    KIMI_PROXY_HOST=0.0.0.0 \
    KIMI_PROXY_PORT=8090 \
    KIMI_DASHBOARD=on
USER 10001
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8090/health', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["kimi-proxy", "serve"]
