# syntax=docker/dockerfile:1
# The trainer image (CPU): `homemole` (cv, train, dataset ...) and `trainer`,
# linked against Debian 12's libtorch 1.13 through the patched gotch copy
# that tools/gotchsetup makes, exactly as on a developer's machine.
# The CUDA variant is deploy/trainer-cuda.Dockerfile.
#
# Build from the repository root:
#   docker build -f deploy/trainer.Dockerfile -t ghcr.io/homemole/trainer:dev .

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libtorch-dev g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Writes .build/gotch and go.work (both ignored by the build context, so made fresh here).
RUN go run ./tools/gotchsetup
# homemole is the full CLI with -tags torch: the image has libtorch, so one
# binary runs every command itself, features included, instead of a front
# handing commands to homemole-full and that to homemole-torch.
RUN go build -tags torch -trimpath -o /out/homemole ./services/homemole/full \
 && go build -tags torch -trimpath -o /out/ ./services/trainer ./services/detector

FROM debian:12-slim
# The runtime half of libtorch-dev: the shared objects the binaries link.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libtorch1.13 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/homemole /out/trainer /out/detector /usr/local/bin/
USER 65532:65532
ENV HOMEMOLE_HOME=/tmp/homemole
ENTRYPOINT ["/usr/local/bin/homemole"]
