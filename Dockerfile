# The operator image: one static musl binary (rustls, no OpenSSL) on distroless.
#   docker build -t puppet-conductor:0.1.0 .
FROM rust:1-bookworm AS builder
# musl-gcc compiles the C parts of ring and aws-lc-sys for the static target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Only what the build reads. rust-toolchain.toml stays out: it would make rustup
# fetch another toolchain instead of using the image's.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY operator ./operator
RUN CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --locked --release --target x86_64-unknown-linux-musl -p puppet-conductor --bin puppet-conductor \
    && cp target/x86_64-unknown-linux-musl/release/puppet-conductor /puppet-conductor

# Not scratch: the AWS SDK and the CA client need the CA bundle in /etc/ssl.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /puppet-conductor /puppet-conductor
# distroless "nonroot"; the chart's runAsUser matches.
USER 65532:65532
ENTRYPOINT ["/puppet-conductor"]
CMD ["run"]
