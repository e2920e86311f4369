# The portcullis container image (docs/kubernetes.md, "The image").
#
#   docker build -t registry.example.com/portcullis/portcullis:0.1.0 .
#
# Build stage: the release binary, exactly as `cargo build --release --locked`
# builds it anywhere else. No system protoc is needed (build.rs compiles proto/
# with a pure-Rust compiler), nor OpenSSL (TLS and JOSE use aws-lc-rs, built by
# its own crate with the C compiler this image has).
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis

# Runtime stage: distroless "cc", not "static" and not scratch. The binary links
# glibc dynamically (`ldd target/release/portcullis`: libc, libm, libgcc_s and
# the loader, nothing else), and distroless/cc is exactly those libraries plus CA
# certificates (portcullis fetches JWKS over https) and tzdata, with no shell and
# no package manager. Debian 12 on both sides, so the glibc the binary was linked
# against is the one it runs on. `:nonroot` runs as uid/gid 65532, which the
# Kubernetes manifests require (runAsNonRoot, runAsUser 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
USER 65532:65532
# gRPC (ext_authz, health, reflection, admin) and HTTP (/healthz, /readyz,
# /metrics, /webhooks/clerk, /.well-known/jwks.json, /v1/token/exchange). Set
# server.grpc_listen / http_listen to 0.0.0.0 in a container: the defaults are
# loopback.
EXPOSE 9191 8181
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.yaml"]
