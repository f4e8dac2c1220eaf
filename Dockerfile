# The influencer-analytics binary; one image for every role (the command picks the role).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The checked statements' descriptions, read offline (SQLX_OFFLINE in .cargo/config.toml).
COPY .cargo ./.cargo
COPY .sqlx ./.sqlx
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin influencer-analytics

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 app
COPY --from=build /src/target/release/influencer-analytics /usr/local/bin/influencer-analytics
COPY seeds /app/seeds
WORKDIR /app
USER app
ENTRYPOINT ["influencer-analytics"]
