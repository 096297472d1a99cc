# The streamfit image: the package and its demo data, run as a non-root user.
# Every service of docker-compose.yml runs `streamfit <command>` from this image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY predictor ./predictor
COPY trainer ./trainer
COPY sample_app ./sample_app
COPY streamfit ./streamfit
# streamfit/common and its three siblings are links to the folders above: the wheel holds one
# package, streamfit, with the parts inside it (docs/architecture.md, "One package")
# the confluent extra too: STREAMFIT_KAFKA_CLIENT=confluent puts a predictor on librdkafka (its wheel bundles it)
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[confluent]'

FROM python:3.11-slim
# LightGBM needs OpenMP at run time.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 streamfit
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER streamfit
WORKDIR /home/streamfit
ENV PYTHONUNBUFFERED=1 STREAMFIT_HOME=/home/streamfit/.streamfit
ENTRYPOINT ["streamfit"]
CMD ["--help"]
