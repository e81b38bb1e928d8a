# syntax=docker/dockerfile:1
# The image of the capture agent, the labeler and the windower: CGO-free
# static binaries on distroless/static (no shell, no libc, runs as nonroot).
# None of them links libtorch, so none needs the trainer image's 1 GB.
#
# Build from the repository root (the context must be the whole module):
#   docker build -f deploy/worker.Dockerfile -t ghcr.io/homemole/worker:dev .
# For a gateway: add --platform linux/arm64 (the Go build cross-compiles; no emulation needed).

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# GOWORK=off: go.work only points gotch at its patched copy, which no binary here imports.
RUN CGO_ENABLED=0 GOWORK=off GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ ./services/capture ./services/labeler ./services/windower

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/capture /out/labeler /out/windower /usr/local/bin/
USER 65532:65532
# The manifests name the binary in `command`; labeler is only the default.
ENTRYPOINT ["/usr/local/bin/labeler"]
