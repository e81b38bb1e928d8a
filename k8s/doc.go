// Package k8s holds HomeMole's Kubernetes manifests (kustomize: base/,
// overlays/, jobs/) and, in its tests, what stands in for a live cluster:
// every kustomization is built with kustomize as a library, every object is
// decoded strictly into its Kubernetes API type, and the wiring between
// objects, images, binaries and flags is checked. See README.md.
package k8s
