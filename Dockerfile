# The batchctl server image, for the Helm chart (charts/batchctl). Multi-stage: the build stage
# compiles the programs (batchctl; batchctl-server, which `batchctl server` runs; batchctl-shim,
# which supervises each process attempt); the runtime stage is distroless (glibc, no shell) and runs
# as non-root uid 65532, as the chart's pod security context expects. SQLite is compiled in.
#
#   docker build -t batchctl:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin batchctl --bin batchctl-server --bin batchctl-shim \
 && install -D -t /out target/release/batchctl target/release/batchctl-server target/release/batchctl-shim

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/batchctl /out/batchctl-server /out/batchctl-shim /usr/local/bin/
USER 65532:65532
EXPOSE 7700
ENTRYPOINT ["/usr/local/bin/batchctl"]
CMD ["server", "--listen", "0.0.0.0:7700"]
