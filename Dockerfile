# The segstream image used by docker-compose.yml for the worker and the producer.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
# Every top-level package pyproject.toml installs (segstream/ holds the `segstream` entry point,
# segstream.cli:main); tests/ and benchmarks/ stay out (.dockerignore).
COPY schemas ./schemas
COPY segstream ./segstream
COPY worker ./worker
COPY analytics ./analytics
COPY producers ./producers
COPY devstack ./devstack
RUN pip install .
# A fixed uid: docker-compose.yml's redis-acl service gives this user the Redis password file.
RUN useradd --create-home --uid 10001 segstream
USER segstream
# The worker's /health, /health/live, /health/ready and /metrics listen on every interface of
# the container (the CLI's default is 127.0.0.1), so a published port reaches them.
ENV SEGSTREAM_WEB_HOST=0.0.0.0 SEGSTREAM_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["segstream"]
CMD ["--help"]
