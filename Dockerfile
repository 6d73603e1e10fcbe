# Builds an image with both example controllers, for the Helm chart in charts/informer-example:
#   docker build -t informer-examples:0.1.0 .
#   kind load docker-image informer-examples:0.1.0 --name informer-e2e
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --example configmap_sync --example etcd_config_watcher

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/examples/configmap_sync /usr/local/bin/configmap_sync
COPY --from=build /src/target/release/examples/etcd_config_watcher /usr/local/bin/etcd_config_watcher
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/configmap_sync"]
