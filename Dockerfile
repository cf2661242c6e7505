# One image for every process: the command picks the Makefile target (api, worker, bridge, scheduler, dashboard).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV VENV=/opt/venv REQUIREMENTS=requirements.txt HOST=0.0.0.0 PYTHONUNBUFFERED=1
COPY requirements.txt requirements-dev.txt Makefile ./
RUN make requirements

COPY core ./core
COPY app ./app
COPY jobs ./jobs
COPY bridge ./bridge
COPY examples ./examples
COPY handler.py gunicorn.conf.py ./

RUN useradd --system --home /app taskrelay
USER taskrelay
EXPOSE 5000 9181
CMD ["make", "api"]
