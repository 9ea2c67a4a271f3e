# One image for every refund-worker process (worker, beat, flower, api, migrations, simulator).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --create-home refunds
USER refunds
ENTRYPOINT ["refund-worker"]
CMD ["--help"]
