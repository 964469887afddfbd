# One image for the router (--run) and the workers (--queue-work).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /srv/app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# .dockerignore keeps tests, benchmarks, deployment files and secrets out.
COPY . .
RUN useradd --create-home app && mkdir -p storage && chown -R app storage
USER app

CMD ["python", "main.py", "--run"]
