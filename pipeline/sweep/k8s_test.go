package sweep

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// TestEmitK8s writes the overlays of examples/sweep-cluster.yaml, checks
// them against the copies in k8s/sweeps (which k8s's tests check against
// the base, the images and homemole's flags), and builds them with
// kustomize, decoding every object strictly.
func TestEmitK8s(t *testing.T) {
	raw, err := os.ReadFile("../../examples/sweep-cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(bytes.NewReader(raw), "sweep-cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, overlay := range []string{"example-cpu", "example-gpu"} {
		gpu := overlay == "example-gpu"
		dir := t.TempDir()
		if err := EmitK8s(dir, raw, s, gpu, 4); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"kustomization.yaml", "job.yaml", "sweep.yaml"} {
			got, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("../../k8s/sweeps", overlay, f))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("k8s/sweeps/%s/%s differs from what --emit-k8s writes: rewrite it with the command in examples/sweep-cluster.yaml", overlay, f)
			}
		}

		rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
		if err != nil {
			t.Fatalf("kustomize build %s: %v", overlay, err)
		}
		var job *batchv1.Job
		var cm *corev1.ConfigMap
		for _, r := range rm.Resources() {
			data, err := r.AsYAML()
			if err != nil {
				t.Fatal(err)
			}
			switch r.GetKind() {
			case "Job":
				job = &batchv1.Job{}
				err = yaml.UnmarshalStrict(data, job)
			case "ConfigMap":
				cm = &corev1.ConfigMap{}
				err = yaml.UnmarshalStrict(data, cm)
			default:
				t.Errorf("%s: unexpected %s %s", overlay, r.GetKind(), r.GetName())
			}
			if err != nil {
				t.Errorf("%s: %s %s does not decode strictly: %v", overlay, r.GetKind(), r.GetName(), err)
			}
		}
		if job == nil || cm == nil {
			t.Fatalf("%s: built Job %v, ConfigMap %v; want both", overlay, job != nil, cm != nil)
		}
		// 2 models x 2 seeds x 5 folds.
		if job.Spec.CompletionMode == nil || *job.Spec.CompletionMode != batchv1.IndexedCompletion ||
			job.Spec.Completions == nil || *job.Spec.Completions != 20 || *job.Spec.Parallelism != 4 {
			t.Errorf("%s: completion mode %v, completions %v, parallelism %v; want Indexed, 20, 4", overlay,
				job.Spec.CompletionMode, job.Spec.Completions, job.Spec.Parallelism)
		}
		pod := job.Spec.Template.Spec
		c := pod.Containers[0]
		if !slices.Contains(c.Args, "--task-index=$(JOB_COMPLETION_INDEX)") || c.Args[0] != "sweep" {
			t.Errorf("%s: args %v do not run the task of the pod's index", overlay, c.Args)
		}
		if pod.Volumes[0].ConfigMap == nil || pod.Volumes[0].ConfigMap.Name != cm.Name || cm.Data["sweep.yaml"] != string(raw) {
			t.Errorf("%s: the spec volume %+v does not mount the generated ConfigMap %s holding the spec", overlay, pod.Volumes[0], cm.Name)
		}
		_, asksGPU := c.Resources.Limits["nvidia.com/gpu"]
		if asksGPU != gpu || strings.Contains(c.Image, "cuda") != gpu || (len(pod.NodeSelector) > 0) != gpu {
			t.Errorf("%s: GPU limit %v, image %s, node selector %v", overlay, asksGPU, c.Image, pod.NodeSelector)
		}
		if job.Namespace != "homemole" {
			t.Errorf("%s: namespace %q", overlay, job.Namespace)
		}
	}

	// A time split is one fold a configuration, whatever its folds.
	for spec, want := range map[string]int{
		"dataset: d\nmodels: [rf, blstm]\ncv: {mode: time, folds: 5}\n":    2,
		"dataset: d\nmodels: [rf, blstm]\ncv: {mode: grouped, folds: 5}\n": 10,
	} {
		s, err := Parse(strings.NewReader(spec), "x.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.TaskCount(); err != nil || n != want {
			t.Errorf("%q: %d tasks (%v), want %d", spec, n, err, want)
		}
	}

	// What a Job cannot run.
	for spec, want := range map[string]string{
		"from_dir: x\nmodels: [rf]\nwindows: [20]\n":                 "needs a spec with dataset:",
		"dataset: d\nmodels: [rf]\ncv: {mode: leave-one-home-out}\n": "a fold per home",
	} {
		s, err := Parse(strings.NewReader(spec), "x.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := EmitK8s(t.TempDir(), []byte(spec), s, false, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("emit %q: %v, want %q", spec, err, want)
		}
	}
}
