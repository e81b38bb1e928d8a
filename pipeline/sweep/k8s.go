package sweep

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/template"

	"github.com/homemole/homemole/pipeline/train"
)

// TaskCount is the number of tasks of a sweep, known without its data:
// configurations times folds, where time is one fold whatever its folds
// (they set the share judged). Leave-one-home-out has a fold per home of
// the dataset, which only the dataset knows.
func (s *Spec) TaskCount() (int, error) {
	if s.CV.Mode == train.CVLeaveOneHomeOut {
		return 0, errors.New("leave-one-home-out has a fold per home of the dataset: a Job's task count cannot be set from the spec alone; use grouped, random or time")
	}
	if s.CV.Mode == train.CVTime {
		return len(s.Configurations()), nil
	}
	return len(s.Configurations()) * s.CV.Folds, nil
}

// EmitK8s writes a kustomize overlay to dir that runs the sweep's tasks as
// one Indexed Job, pod I running task I (`homemole sweep --task-index`),
// with the spec in a generated ConfigMap. raw is the spec file as given.
// gpu asks for one NVIDIA GPU per pod and the CUDA image. It is applied
// after the base (its Secrets, endpoints and service account).
func EmitK8s(dir string, raw []byte, s *Spec, gpu bool, parallel int) error {
	if s.FromDir != "" {
		// Pods would each build the datasets through the cluster's own
		// streams, where its labelers and windowers would take them up.
		return errors.New("--emit-k8s needs a spec with dataset: (a dataset version the cluster's windowers built), not from_dir")
	}
	n, err := s.TaskCount()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--emit-k8s: %w", err)
	}
	image := "ghcr.io/homemole/trainer"
	if gpu {
		image = "ghcr.io/homemole/trainer-cuda"
	}
	args := map[string]any{"Tasks": n, "Parallel": max(1, min(parallel, n)), "GPU": gpu, "Image": image}
	files := map[string]*template.Template{"kustomization.yaml": kustomizationTmpl, "job.yaml": jobTmpl}
	for name, t := range files {
		var b bytes.Buffer
		if err := t.Execute(&b, args); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--emit-k8s: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "sweep.yaml"), raw, 0o644); err != nil {
		return fmt.Errorf("--emit-k8s: %w", err)
	}
	return nil
}

var kustomizationTmpl = template.Must(template.New("k").Parse(`# A sweep as one Indexed Job: pod I runs task I (homemole sweep --task-index)
# of the spec in sweep.yaml and stores its result under sweeps/HASH/fold-F.json;
# a task already done is not run again. Written by homemole sweep --emit-k8s.
# Apply after the base (its Secrets, endpoints ConfigMap and service account):
#   kubectl apply -k DIR
#   kubectl -n homemole wait --for=condition=complete job/trainer-sweep --timeout=48h
# then gather sweep.json and sweep.html from the store:
#   homemole sweep --spec DIR/sweep.yaml --gather --out OUT
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: homemole
labels:
  - pairs:
      app.kubernetes.io/part-of: homemole
    includeSelectors: false
resources:
  - job.yaml
configMapGenerator:
  - name: homemole-sweep
    files: [sweep.yaml]
images:
  - name: homemole-trainer
    newName: {{.Image}}
    newTag: dev
`))

var jobTmpl = template.Must(template.New("j").Parse(`apiVersion: batch/v1
kind: Job
metadata:
  name: trainer-sweep
spec:
  completionMode: Indexed
  completions: {{.Tasks}}
  parallelism: {{.Parallel}}
  # A failed task is retried on its own, and one bad task does not take the others down.
  backoffLimitPerIndex: 2
  maxFailedIndexes: {{.Tasks}}
  ttlSecondsAfterFinished: 604800
  template:
    metadata:
      labels:
        app.kubernetes.io/name: trainer-sweep
        app.kubernetes.io/component: trainer
        homemole.io/nats-client: "true"
        homemole.io/s3-client: "true"
    spec:
      serviceAccountName: homemole-trainer
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
{{- if .GPU}}
      nodeSelector:
        # Set by NVIDIA's GPU feature discovery on nodes with a GPU.
        nvidia.com/gpu.present: "true"
      tolerations:
        - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
{{- end}}
      containers:
        - name: trainer
          image: homemole-trainer
          command: ["/usr/local/bin/homemole"]
          args:
            - sweep
            - --spec=/etc/homemole-sweep/sweep.yaml
            - --task-index=$(JOB_COMPLETION_INDEX)
          env:
            # Set by the Job controller too; declared so $(JOB_COMPLETION_INDEX) above is plainly defined.
            - name: JOB_COMPLETION_INDEX
              valueFrom:
                fieldRef: {fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            - name: HOMEMOLE_S3_ACCESS_KEY
              valueFrom:
                secretKeyRef: {name: homemole-s3, key: access-key}
            - name: HOMEMOLE_S3_SECRET_KEY
              valueFrom:
                secretKeyRef: {name: homemole-s3, key: secret-key}
            # The NATS user of this worker (go run ./tools/natsauth makes the Secret).
            - {name: HOMEMOLE_NATS_USER, value: trainer}
            - name: HOMEMOLE_NATS_PASSWORD
              valueFrom:
                secretKeyRef: {name: homemole-nats, key: trainer-password}
          envFrom:
            - configMapRef: {name: homemole-endpoints}
          resources:
{{- if .GPU}}
            # The GPU does the training; the CPU only feeds it batches.
            requests: {cpu: "2", memory: 8Gi, nvidia.com/gpu: "1"}
            limits: {memory: 16Gi, nvidia.com/gpu: "1"}
{{- else}}
            # Every task reads its dataset's windows into memory.
            requests: {cpu: "4", memory: 8Gi}
            limits: {memory: 16Gi}
{{- end}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: sweep, mountPath: /etc/homemole-sweep, readOnly: true}
            # The CA the NATS servers' certificate chains to (HOMEMOLE_NATS_CA).
            - {name: nats-ca, mountPath: /etc/homemole-nats, readOnly: true}
            - {name: scratch, mountPath: /tmp}
      volumes:
        - name: sweep
          configMap: {name: homemole-sweep}
        # Only the CA of the Secret: the other workers' passwords stay out of this pod.
        - name: nats-ca
          secret:
            secretName: homemole-nats
            items: [{key: ca.crt, path: ca.crt}]
        - name: scratch
          emptyDir: {}
`))
