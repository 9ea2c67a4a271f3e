# One image for every refund-worker process (worker, beat, flower, api, migrations, simulator):
# the entrypoint is `refund-worker`, so a container's command is a refund-worker subcommand.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /build && useradd --create-home refunds
USER refunds
# A writable working directory (celery beat's schedule file, if not given --schedule).
WORKDIR /home/refunds
ENTRYPOINT ["refund-worker"]
CMD ["--help"]
