package k8s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChecksFail feeds the checks a kustomization with one mistake of each
// kind they exist for, and wants every one reported: a check that cannot
// fail would let the real manifests pass unread.
func TestChecksFail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", "resources: [bad.yaml]\nconfigMapGenerator:\n  - name: run\n    literals: [DATASET=d]\n")
	write("bad.yaml", `apiVersion: v1
kind: Service
metadata: {name: orphan}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: wrongport}
spec:
  selector: {app: w}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  selector: {matchLabels: {app: w}}
  template:
    metadata: {labels: {app: w}}
    spec:
      serviceAccountName: ghost
      containers:
        - name: labeler
          image: ghcr.io/homemole/worker:dev
          command: [/usr/local/bin/labeler]
          args: [--campaign=/c.yaml, --colour=red, --dataset=$(NOPE), --partitions=2, --partition=0]
          env:
            - {name: HOMEMOLE_S3_SECRET_KEY, value: hunter2}
            - name: DATASET
              valueFrom: {configMapKeyRef: {name: run, key: NAME}}
          ports: [{name: metrics, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /readyz, port: 8080}}
          volumeMounts: [{name: nowhere, mountPath: /x}]
        - name: cli
          image: ghcr.io/homemole/trainer:dev
          command: [/usr/local/bin/homemole]
          args: [fly]
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
        - name: cli2
          image: ghcr.io/homemole/trainer:dev
          command: [/usr/local/bin/homemole]
          args: [dataset, assmble, --dataset=x]
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
        - name: lost
          image: ghcr.io/homemole/worker:dev
          command: [/usr/local/bin/trainer]
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
        - name: third
          image: nats
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo}
spec:
  replicas: two
  selector: {matchLabels: {app: t}}
  template:
    metadata: {labels: {app: t}}
    spec:
      containers: [{name: t, image: x:1, imagePullPolicy: Always, restartPolicyy: Never}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: typo2}
date: {a: b}
---
apiVersion: v1
kind: Secret
metadata: {name: leaked}
stringData: {key: real}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nobody}
spec:
  podSelector: {matchLabels: {app: gone}}
  ingress: [{from: [{podSelector: {matchLabels: {app: ghost}}}]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: nats-config}
data:
  nats.conf: |
    server_name: $POD_NAME
    port: 4222
    http_port: 8222
    max_payload: 1MB
    jetstream {store_dir: /data/js}
    cluster {name: c, port: 6222, routes: [nats://nats-0.nats-headless:6222]}
---
apiVersion: v1
kind: Service
metadata: {name: nats-headless}
spec:
  clusterIP: None
  selector: {app: nats}
  ports: [{port: 4222, targetPort: client}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: nats}
spec:
  replicas: 1
  serviceName: nats-headless
  selector: {matchLabels: {app: nats}}
  template:
    metadata: {labels: {app: nats}}
    spec:
      serviceAccountName: nats
      containers:
        - name: nats
          image: nats:2.15.2-alpine
          ports: [{name: client, containerPort: 4222}, {name: cluster, containerPort: 6222}, {name: monitor, containerPort: 8222}]
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
          volumeMounts: [{name: config, mountPath: /etc/nats}, {name: data, mountPath: /data}]
      volumes: [{name: config, configMap: {name: nats-config}}]
  volumeClaimTemplates: [{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-nats}
spec:
  podSelector: {matchLabels: {app: nats}}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 4222}]}, {from: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: 4222}]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: sniff}
spec:
  selector: {matchLabels: {app: s}}
  template:
    metadata: {labels: {app: s}}
    spec:
      hostNetwork: true
      containers:
        - name: capture
          image: ghcr.io/homemole/worker:dev
          command: [/usr/local/bin/capture]
          args: [--metrics-addr=:9464]
          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}
          securityContext:
            privileged: true
            capabilities: {add: [NET_RAW, NET_ADMIN]}
`)
	var r recorder
	r.run(func() {
		b := kustomize(&r, dir)
		b.dir = "testdata"
		checkBuild(&r, b, map[string]*build{"testdata": b}, sources(t))
	})
	all := strings.Join(r.errs, "\n")
	for _, want := range []string{
		"Deployment typo does not decode strictly",    // wrong type and unknown field
		"Service/orphan selects map[app:nobody]",      // Service selecting no pod
		"port  targets http, which Deployment/w does", // Service on a port the pods lack
		"refers to ServiceAccount ghost",              // missing ServiceAccount
		`refers to key "NAME" of ConfigMap run`,       // missing ConfigMap key (the generated name resolves)
		"HOMEMOLE_S3_SECRET_KEY is a literal value",   // a secret in plain sight
		"refers to $(NOPE)",                           // undefined variable in args
		"readiness probe on port 8080",                // probe on an unexposed port
		"mounts nowhere",                              // mount of no volume
		"labeler: requests cpu none memory none",      // no resources
		"labeler has no flag --colour",                // flag the binary lacks
		"labeler serves no metrics",                   // worker without --metrics-addr
		"homemole [fly]: want one of its commands",    // not a homemole command
		"runs /usr/local/bin/trainer, which ghcr.io/homemole/worker does not install",
		`image "nats": want a pinned tag`, // unpinned third-party image
		"Secret/leaked: a Secret with data outside overlays/dev",
		"NetworkPolicy/nobody applies to no pod",
		"--partitions=2 in a Deployment",
		"ingress peer app=ghost matches no pod",
		"nats.conf lets clients in without a user",               // an anonymous NATS
		"nats.conf lets clients connect without TLS",             // passwords in the clear
		"the cluster routes run without TLS",                     // replicas in the clear
		"NetworkPolicy/open-nats admits port 4222 from anywhere", // an open 4222
		"admits port 4222 from 0.0.0.0/0, which is anywhere",
		"container capture is privileged",                                     // privileged container
		"adds capability NET_ADMIN",                                           // capability beyond NET_RAW
		"adds capabilities without dropping ALL",                              // caps on top of the defaults
		"container capture has privileges and no seccomp profile",             // no seccomp
		"--metrics-addr=:9464 on the host network listens on every interface", // metrics on every host interface
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no report of %q", want)
		}
	}
	t.Logf("reports:\n%s", all)
}
