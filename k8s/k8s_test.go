package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homemole/homemole/k8s/natsauth"
	"github.com/homemole/homemole/pipeline/campaign"
)

// No Kubernetes cluster is available to the tests. What stands in for one:
// every kustomization under k8s/ is built with kustomize as a library, every
// object it makes is decoded strictly into its Kubernetes API type (an
// unknown field or a wrong type fails), and the objects are checked against
// each other and against the repository (see checkBuild).

// kinds are the API types the manifests may use. A kind missing here fails
// the test: add it, with its type, to have it decoded and checked.
var kinds = map[string]func() any{
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                  func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                  func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                       func() any { return &batchv1.Job{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
}

// external is an object a kustomization refers to and does not make.
type external struct {
	kind, name string
	// from names the kustomization that makes it, applied first; its build
	// must make it. Empty: made by hand (see README.md), with keys.
	from string
	keys []string
}

// s3Secret is made by hand: S3 credentials are never in the repository.
var s3Secret = external{kind: "Secret", name: "homemole-s3", keys: []string{"access-key", "secret-key"}}

// The NATS Secrets `go run ./tools/natsauth` makes: the servers'
// certificates and accounts, and the workers' CA and passwords.
var (
	natsServerSecret = external{kind: "Secret", name: "nats-server", keys: []string{
		natsauth.Files.ServerCA, natsauth.Files.ServerCert, natsauth.Files.ServerKey, natsauth.Files.ServerAuth}}
	natsWorkersSecret = external{kind: "Secret", name: "homemole-nats", keys: []string{natsauth.Files.WorkersCA,
		natsauth.PasswordKey(natsauth.Labeler), natsauth.PasswordKey(natsauth.Windower), natsauth.PasswordKey(natsauth.Trainer),
		natsauth.PasswordKey(natsauth.Detector)}}
)

// externals lists, for every kustomization, what it refers to and does not
// make. Every kustomization under k8s/ must have an entry, so adding one
// means deciding this.
var externals = map[string][]external{
	"base":                  {s3Secret, natsServerSecret, natsWorkersSecret},
	"overlays/cpu":          {s3Secret, natsServerSecret, natsWorkersSecret},
	"overlays/gpu":          {s3Secret, natsServerSecret, natsWorkersSecret},
	"overlays/dev":          {natsServerSecret, natsWorkersSecret}, // generates a fake homemole-s3; a certificate cannot be faked in the repository
	"overlays/lan-hosts":    {s3Secret, natsServerSecret, natsWorkersSecret},
	"overlays/wan-ipid":     {s3Secret, natsServerSecret, natsWorkersSecret},
	"jobs/cv-gather":        jobExternals,
	"jobs/dataset-assemble": jobExternals,
	// Written by homemole sweep --emit-k8s from examples/sweep-cluster.yaml.
	"sweeps/example-cpu": sweepExternals,
	"sweeps/example-gpu": sweepExternals,
}

// sweepExternals are what a sweep's Job takes from the base: its spec is
// a ConfigMap of its own.
var sweepExternals = []external{
	s3Secret,
	natsWorkersSecret,
	{kind: "ConfigMap", name: "homemole-endpoints", from: "base"},
	{kind: "ServiceAccount", name: "homemole-trainer", from: "base"},
}

// jobExternals are what the Jobs applied after the base take from it.
var jobExternals = []external{
	s3Secret,
	natsWorkersSecret,
	{kind: "ConfigMap", name: "homemole-run", from: "base"},
	{kind: "ConfigMap", name: "homemole-endpoints", from: "base"},
	{kind: "ServiceAccount", name: "homemole-trainer", from: "base"},
}

// The workers that must serve /healthz, /readyz and /metrics in a pod.
var metricsWorkers = []string{"labeler", "windower", "capture", "trainer", "detector"}

type object struct {
	kind, name string
	obj        any
}

type build struct {
	dir  string
	objs []object
}

func (b *build) find(kind, name string) any {
	for _, o := range b.objs {
		if o.kind == kind && o.name == name {
			return o.obj
		}
	}
	return nil
}

// kustomizations finds every folder under k8s/ with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			out = append(out, filepath.ToSlash(filepath.Dir(p)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 4 {
		t.Fatalf("found kustomizations %v: want base, overlays and jobs", out)
	}
	return out
}

// kustomize builds dir as `kubectl apply -k` would and decodes every
// object strictly.
func kustomize(t reporter, dir string) *build {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b := &build{dir: dir}
	for _, r := range rm.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		gvk := r.GetApiVersion() + "/" + r.GetKind()
		mk, ok := kinds[gvk]
		if !ok {
			t.Errorf("%s: %s %s: kind not in the test's table", dir, gvk, r.GetName())
			continue
		}
		obj := mk()
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", dir, gvk, r.GetName(), err)
			continue
		}
		b.objs = append(b.objs, object{kind: r.GetKind(), name: r.GetName(), obj: obj})
	}
	return b
}

// TestKustomizations is the stand-in for a cluster: see the top of this file.
func TestKustomizations(t *testing.T) {
	builds := map[string]*build{}
	for _, dir := range kustomizations(t) {
		if _, ok := externals[dir]; !ok {
			t.Errorf("%s: no entry in externals: say what it refers to and does not make", dir)
		}
		builds[dir] = kustomize(t, dir)
	}
	if t.Failed() {
		t.FailNow()
	}
	src := sources(t)
	for dir, b := range builds {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			checkBuild(t, b, builds, src)
		})
	}

	// What differs between the overlays.
	gpuJob := builds["overlays/gpu"].find("Job", "trainer-cv").(*batchv1.Job)
	spec := gpuJob.Spec.Template.Spec
	if q := spec.Containers[0].Resources.Limits[gpuResource]; q.Value() < 1 {
		t.Errorf("gpu overlay: trainer-cv limits %v of %s", q.String(), gpuResource)
	}
	if len(spec.NodeSelector) == 0 || !slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool { return t.Key == string(gpuResource) }) {
		t.Errorf("gpu overlay: trainer-cv has node selector %v and tolerations %v: want GPU nodes", spec.NodeSelector, spec.Tolerations)
	}
	if img := spec.Containers[0].Image; !strings.HasPrefix(img, "ghcr.io/homemole/trainer-cuda:") {
		t.Errorf("gpu overlay: trainer-cv runs %s, want the CUDA image", img)
	}
	// The lan-hosts overlay: the detector counts LAN hosts with a host
	// model from the bucket, the key homemole-run names.
	det := builds["overlays/lan-hosts"].find("StatefulSet", "detector").(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0]
	run := builds["overlays/lan-hosts"].find("ConfigMap", "homemole-run").(*corev1.ConfigMap)
	if !slices.Contains(det.Args, "--hosts-object=$(HOST_MODEL)") || !slices.Contains(det.Args, "--tap=lan") || slices.ContainsFunc(det.Args, func(a string) bool { return strings.HasPrefix(a, "--model") }) ||
		run.Data["HOST_MODEL"] == "" || run.Data["DATASET"] == "" {
		t.Errorf("lan-hosts overlay: detector args %v, homemole-run %v: want --hosts-object=$(HOST_MODEL) and --tap=lan, no --model, and HOST_MODEL beside the base's keys", det.Args, run.Data)
	}
	// The wan-ipid overlay: the same with a WAN model on the wan tap.
	det = builds["overlays/wan-ipid"].find("StatefulSet", "detector").(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0]
	run = builds["overlays/wan-ipid"].find("ConfigMap", "homemole-run").(*corev1.ConfigMap)
	if !slices.Contains(det.Args, "--hosts-object=$(HOST_MODEL)") || !slices.Contains(det.Args, "--tap=wan") || slices.ContainsFunc(det.Args, func(a string) bool { return strings.HasPrefix(a, "--model") }) ||
		run.Data["HOST_MODEL"] != "models/hosts-wan.json" || run.Data["DATASET"] == "" {
		t.Errorf("wan-ipid overlay: detector args %v, homemole-run %v: want --hosts-object=$(HOST_MODEL) and --tap=wan, no --model, and HOST_MODEL beside the base's keys", det.Args, run.Data)
	}
	for _, dir := range []string{"overlays/cpu", "overlays/dev"} {
		for _, pt := range podTemplates(builds[dir]) {
			for _, c := range pt.spec.Containers {
				if _, ok := c.Resources.Limits[gpuResource]; ok {
					t.Errorf("%s: %s asks for a GPU", dir, pt.name)
				}
			}
		}
	}
}

const gpuResource = corev1.ResourceName("nvidia.com/gpu")

// repoFacts is what checkBuild compares the manifests with.
type repoFacts struct {
	services []string
	commands []string
	subcmds  []string
	images   map[string]dockerImage
	flags    map[string]map[string]bool
}

func sources(t *testing.T) *repoFacts {
	f := &repoFacts{services: services(t), commands: homemoleCommands(t), subcmds: homemoleSubcommands(t), images: map[string]dockerImage{}, flags: map[string]map[string]bool{}}
	for repo, df := range images {
		f.images[repo] = parseDockerfile(t, df)
	}
	for _, s := range f.services {
		f.flags[s] = binaryFlags(t, s)
	}
	return f
}

type podTemplate struct {
	name   string // Kind/name of the owner
	labels map[string]string
	spec   *corev1.PodSpec
	claims []string // volumeClaimTemplates
}

func podTemplates(b *build) []podTemplate {
	var out []podTemplate
	for _, o := range b.objs {
		n := o.kind + "/" + o.name
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, podTemplate{n, x.Spec.Template.Labels, &x.Spec.Template.Spec, nil})
		case *appsv1.DaemonSet:
			out = append(out, podTemplate{n, x.Spec.Template.Labels, &x.Spec.Template.Spec, nil})
		case *batchv1.Job:
			out = append(out, podTemplate{n, x.Spec.Template.Labels, &x.Spec.Template.Spec, nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, c := range x.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			out = append(out, podTemplate{n, x.Spec.Template.Labels, &x.Spec.Template.Spec, claims})
		}
	}
	return out
}

// lookup finds an object the build refers to: in the build, or among its
// declared externals (those of another kustomization must be in its build).
func lookup(t reporter, b *build, all map[string]*build, kind, name string) (obj any, ext *external) {
	if o := b.find(kind, name); o != nil {
		return o, nil
	}
	for _, e := range externals[b.dir] {
		if e.kind != kind || e.name != name {
			continue
		}
		if e.from == "" {
			return nil, &e
		}
		src, ok := all[e.from]
		if !ok {
			t.Errorf("%s: external %s %s from %s: no such kustomization", b.dir, kind, name, e.from)
			return nil, &e
		}
		if o := src.find(kind, name); o != nil {
			return o, &e
		}
		t.Errorf("%s: %s %s is said to come from %s, whose build does not make it (a name suffix hash?)", b.dir, kind, name, e.from)
		return nil, &e
	}
	return nil, nil
}

// checkRef reports a reference to a missing object, or to a missing key of one.
func checkRef(t reporter, b *build, all map[string]*build, who, kind, name, key string) {
	t.Helper()
	obj, ext := lookup(t, b, all, kind, name)
	if obj == nil && ext == nil {
		t.Errorf("%s refers to %s %s, which neither the build makes nor is a declared external", who, kind, name)
		return
	}
	if key == "" {
		return
	}
	var keys []string
	switch x := obj.(type) {
	case *corev1.ConfigMap:
		for k := range x.Data {
			keys = append(keys, k)
		}
	case *corev1.Secret:
		for k := range x.Data {
			keys = append(keys, k)
		}
		for k := range x.StringData {
			keys = append(keys, k)
		}
	case nil:
		keys = ext.keys
	}
	if !slices.Contains(keys, key) {
		t.Errorf("%s refers to key %q of %s %s, which has %v", who, key, kind, name, keys)
	}
}

func selectorMatches(t reporter, who string, sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: selector: %v", who, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkBuild checks one kustomization's objects against each other and the
// repository:
//   - names are valid DNS names; workloads' selectors select their own pods;
//   - every Service selects some pod, on ports those pods expose;
//     every StatefulSet's serviceName is a headless Service;
//   - every ServiceAccount, ConfigMap, Secret (and key), PVC and volume a pod
//     refers to exists or is a declared external;
//   - every container requests CPU and memory and limits memory; secrets
//     reach containers only through secretKeyRef, never as values;
//   - probes use ports the container exposes; $(VAR) in command and args
//     names a variable the container has;
//   - HomeMole containers run a binary their image installs, real homemole
//     commands and real flags; workers serve metrics on a port they expose;
//   - NetworkPolicies select pods that exist, and admit to ports they expose;
//   - a Secret with data is only in overlays/dev, and marked fake;
//   - partitioned workers run one StatefulSet pod per partition, each told
//     its ordinal;
//   - the NATS cluster's routes and replicas, the streams' replicas, the CV
//     Job's completions and folds agree; the campaign file parses.
func checkBuild(t reporter, b *build, all map[string]*build, src *repoFacts) {
	t.Helper()
	pts := podTemplates(b)
	if len(pts) == 0 {
		t.Errorf("%s makes no pods", b.dir)
	}
	for _, o := range b.objs {
		for _, msg := range validation.IsDNS1123Subdomain(o.name) {
			t.Errorf("%s: %s %q: %s", b.dir, o.kind, o.name, msg)
		}
	}

	for _, o := range b.objs {
		who := fmt.Sprintf("%s: %s/%s", b.dir, o.kind, o.name)
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			if !selectorMatches(t, who, x.Spec.Selector, x.Spec.Template.Labels) {
				t.Errorf("%s: selector does not select its own pods", who)
			}
		case *appsv1.DaemonSet:
			if !selectorMatches(t, who, x.Spec.Selector, x.Spec.Template.Labels) {
				t.Errorf("%s: selector does not select its own pods", who)
			}
		case *appsv1.StatefulSet:
			if !selectorMatches(t, who, x.Spec.Selector, x.Spec.Template.Labels) {
				t.Errorf("%s: selector does not select its own pods", who)
			}
			svc, _ := b.find("Service", x.Spec.ServiceName).(*corev1.Service)
			if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s: serviceName %q is not a headless Service of the build", who, x.Spec.ServiceName)
			}
		case *policyv1.PodDisruptionBudget:
			if !slices.ContainsFunc(pts, func(p podTemplate) bool { return selectorMatches(t, who, x.Spec.Selector, p.labels) }) {
				t.Errorf("%s selects no pods", who)
			}
		case *corev1.Service:
			checkService(t, who, x, pts)
		case *networkingv1.NetworkPolicy:
			checkNetworkPolicy(t, who, x, pts)
		case *corev1.Secret:
			if len(x.Data)+len(x.StringData) > 0 {
				if b.dir != "overlays/dev" {
					t.Errorf("%s: a Secret with data outside overlays/dev: credentials never go in the repository", who)
				}
				for k, v := range x.Data {
					if !strings.Contains(string(v), "NOT-A-SECRET") {
						t.Errorf("%s: key %s is not marked NOT-A-SECRET", who, k)
					}
				}
			}
		case *corev1.ConfigMap:
			if data, ok := x.Data["campaign.yaml"]; ok {
				if _, err := campaign.Parse([]byte(data)); err != nil {
					t.Errorf("%s: campaign.yaml: %v", who, err)
				}
			}
		}
	}

	for _, pt := range pts {
		checkPod(t, b, all, src, pt)
		checkPrivilege(t, b.dir+": "+pt.name, pt.spec)
	}
	checkPartitions(t, b)
	checkNATS(t, b, all)
	checkCVJob(t, b, all)
}

func checkService(t reporter, who string, svc *corev1.Service, pts []podTemplate) {
	t.Helper()
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("%s has no selector", who)
		return
	}
	var matched []podTemplate
	for _, p := range pts {
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.labels)) {
			matched = append(matched, p)
		}
	}
	if len(matched) == 0 {
		t.Errorf("%s selects %v, which no pod template has", who, svc.Spec.Selector)
		return
	}
	for _, port := range svc.Spec.Ports {
		target := port.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(port.Port)
		}
		for _, p := range matched {
			if !podExposes(p.spec, target) {
				t.Errorf("%s: port %s targets %s, which %s does not expose", who, port.Name, target.String(), p.name)
			}
		}
	}
}

func podExposes(spec *corev1.PodSpec, port intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		if containerExposes(&c, port) {
			return true
		}
	}
	return false
}

func containerExposes(c *corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return true
		}
	}
	return false
}

func checkNetworkPolicy(t reporter, who string, np *networkingv1.NetworkPolicy, pts []podTemplate) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Errorf("%s: %v", who, err)
		return
	}
	var selected []podTemplate
	for _, p := range pts {
		if sel.Matches(labels.Set(p.labels)) {
			selected = append(selected, p)
		}
	}
	if len(selected) == 0 {
		t.Errorf("%s applies to no pod", who)
	}
	peers := func(ps []networkingv1.NetworkPolicyPeer, dir string) {
		for _, peer := range ps {
			if peer.PodSelector == nil || peer.NamespaceSelector != nil {
				continue // other namespaces are not in the build
			}
			if !slices.ContainsFunc(pts, func(p podTemplate) bool { return selectorMatches(t, who, peer.PodSelector, p.labels) }) {
				t.Errorf("%s: %s peer %v matches no pod", who, dir, metav1.FormatLabelSelector(peer.PodSelector))
			}
		}
	}
	for _, in := range np.Spec.Ingress {
		peers(in.From, "ingress")
		for _, port := range in.Ports {
			if port.Port == nil {
				continue
			}
			if !slices.ContainsFunc(selected, func(p podTemplate) bool { return podExposes(p.spec, *port.Port) }) {
				t.Errorf("%s admits port %s, which none of its pods expose", who, port.Port.String())
			}
		}
	}
	for _, out := range np.Spec.Egress {
		peers(out.To, "egress")
	}
}

func checkPod(t reporter, b *build, all map[string]*build, src *repoFacts, pt podTemplate) {
	t.Helper()
	who := b.dir + ": " + pt.name
	spec := pt.spec
	if spec.ServiceAccountName == "" {
		t.Errorf("%s runs as the default ServiceAccount: give it its own", who)
	} else {
		checkRef(t, b, all, who, "ServiceAccount", spec.ServiceAccountName, "")
	}
	volumes := map[string]bool{}
	for _, c := range pt.claims {
		volumes[c] = true
	}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		switch {
		case v.ConfigMap != nil:
			checkRef(t, b, all, who, "ConfigMap", v.ConfigMap.Name, "")
		case v.Secret != nil:
			checkRef(t, b, all, who, "Secret", v.Secret.SecretName, "")
		case v.PersistentVolumeClaim != nil:
			t.Errorf("%s: volume %s uses PVC %s: the manifests make PVCs through volumeClaimTemplates only", who, v.Name, v.PersistentVolumeClaim.ClaimName)
		}
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cwho := who + " container " + c.Name
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s mounts %s, which is neither a volume nor a volume claim template", cwho, m.Name)
			}
		}
		req, lim := c.Resources.Requests, c.Resources.Limits
		if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
			t.Errorf("%s: requests cpu %s memory %s, limits memory %s: want all three", cwho, qty(req, corev1.ResourceCPU), qty(req, corev1.ResourceMemory), qty(lim, corev1.ResourceMemory))
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
			// A *_FILE variable names where a secret is, not the secret.
			if e.Value != "" && regexp.MustCompile(`(?i)(key|secret|password|token)`).MatchString(e.Name) && !strings.HasSuffix(e.Name, "_FILE") {
				t.Errorf("%s: %s is a literal value: take it from a Secret", cwho, e.Name)
			}
			if f := e.ValueFrom; f != nil {
				if f.ConfigMapKeyRef != nil {
					checkRef(t, b, all, cwho, "ConfigMap", f.ConfigMapKeyRef.Name, f.ConfigMapKeyRef.Key)
				}
				if f.SecretKeyRef != nil {
					checkRef(t, b, all, cwho, "Secret", f.SecretKeyRef.Name, f.SecretKeyRef.Key)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				checkRef(t, b, all, cwho, "ConfigMap", ef.ConfigMapRef.Name, "")
				if cm, _ := lookup(t, b, all, "ConfigMap", ef.ConfigMapRef.Name); cm != nil {
					for k := range cm.(*corev1.ConfigMap).Data {
						env[ef.Prefix+k] = true
					}
				}
			case ef.SecretRef != nil:
				checkRef(t, b, all, cwho, "Secret", ef.SecretRef.Name, "")
			}
		}
		for _, s := range append(slices.Clone(c.Command), c.Args...) {
			for _, m := range varRef.FindAllStringSubmatch(s, -1) {
				if !env[m[1]] {
					t.Errorf("%s: %q refers to $(%s), which the container's environment lacks", cwho, s, m[1])
				}
			}
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if p == nil {
				continue
			}
			var port *intstr.IntOrString
			switch {
			case p.HTTPGet != nil:
				port = &p.HTTPGet.Port
			case p.TCPSocket != nil:
				port = &p.TCPSocket.Port
			case p.GRPC != nil:
				port = ptr(intstr.FromInt32(p.GRPC.Port))
			}
			if port != nil && !containerExposes(&c, *port) {
				t.Errorf("%s: %s probe on port %s, which the container does not expose", cwho, name, port.String())
			}
		}
		checkImage(t, cwho, &c, src)
	}
}

func ptr[T any](v T) *T { return &v }

func qty(l corev1.ResourceList, n corev1.ResourceName) string {
	if q, ok := l[n]; ok {
		return q.String()
	}
	return "none"
}

// checkImage: a HomeMole container runs a binary its image installs, with
// real commands and flags; any other image is pinned to a version.
func checkImage(t reporter, who string, c *corev1.Container, src *repoFacts) {
	t.Helper()
	i := strings.LastIndex(c.Image, ":")
	repo, tag := c.Image, ""
	if i > strings.LastIndex(c.Image, "/") {
		repo, tag = c.Image[:i], c.Image[i+1:]
	}
	if tag == "" || tag == "latest" || strings.HasPrefix(repo, "homemole-") {
		t.Errorf("%s: image %q: want a pinned tag, and no placeholder the images transformer left unmapped", who, c.Image)
		return
	}
	img, ours := src.images[repo]
	if !ours {
		if strings.Contains(repo, "homemole") {
			t.Errorf("%s: image %s is not one deploy/ builds (%v)", who, repo, keys(src.images))
		}
		return
	}
	cmd := img.entrypoint
	if len(c.Command) > 0 {
		cmd = c.Command[0]
	}
	bin, ok := strings.CutPrefix(cmd, binDir)
	if !ok || !slices.Contains(img.bins, bin) {
		t.Errorf("%s runs %s, which %s does not install (%v)", who, cmd, repo, img.bins)
		return
	}
	if !slices.Contains(src.services, bin) {
		t.Errorf("%s runs %s, which is no folder of services/", who, bin)
		return
	}
	args := c.Args
	if len(c.Command) > 1 {
		args = append(slices.Clone(c.Command[1:]), args...)
	}
	if bin == "homemole" {
		if len(args) == 0 || !slices.Contains(src.commands, args[0]) {
			t.Errorf("%s: homemole %v: want one of its commands %v first", who, args, src.commands)
			return
		}
		args = args[1:]
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			if !slices.Contains(src.subcmds, args[0]) {
				t.Errorf("%s: homemole %s: %q is none of the words its commands take (%v)", who, c.Args[0], args[0], src.subcmds)
			}
			args = args[1:]
		}
	}
	metricsPort := ""
	for _, a := range args {
		name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: argument %q: the binaries take flags only, as --name=value", who, a)
			continue
		}
		if !src.flags[bin][name] {
			t.Errorf("%s: %s has no flag --%s", who, bin, name)
		}
		if name == "metrics-addr" {
			metricsPort = val[strings.LastIndex(val, ":")+1:]
		}
	}
	if !slices.Contains(metricsWorkers, bin) {
		return
	}
	port, err := strconv.Atoi(metricsPort)
	if err != nil {
		t.Errorf("%s: %s serves no metrics: want --metrics-addr=:PORT (its default is off)", who, bin)
		return
	}
	if !containerExposes(c, intstr.FromInt32(int32(port))) {
		t.Errorf("%s: metrics on port %d, which the container does not expose", who, port)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: want a liveness probe on /healthz", who)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var natsRoute = regexp.MustCompile(`nats://([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)`)

// checkNATS: the routes name every node of the StatefulSet through its
// headless Service, and the streams are replicated no wider than the cluster.
func checkNATS(t reporter, b *build, all map[string]*build) {
	t.Helper()
	sts, _ := b.find("StatefulSet", "nats").(*appsv1.StatefulSet)
	if sts == nil {
		return
	}
	cm, _ := b.find("ConfigMap", "nats-config").(*corev1.ConfigMap)
	if cm == nil {
		t.Errorf("%s: no nats-config", b.dir)
		return
	}
	conf := cm.Data["nats.conf"]
	nodes := map[int]bool{}
	for _, m := range natsRoute.FindAllStringSubmatch(conf, -1) {
		i, _ := strconv.Atoi(m[2])
		if m[1] != sts.Name || m[3] != sts.Spec.ServiceName || m[4] != "6222" {
			t.Errorf("%s: route %s is not %s-N.%s:6222", b.dir, m[0], sts.Name, sts.Spec.ServiceName)
		}
		nodes[i] = true
	}
	replicas := int(*sts.Spec.Replicas)
	for i := range replicas {
		if !nodes[i] {
			t.Errorf("%s: nats.conf has no route to node %d of %d", b.dir, i, replicas)
		}
	}
	if len(nodes) != replicas {
		t.Errorf("%s: %d routes for %d replicas", b.dir, len(nodes), replicas)
	}
	// The server's own parser: syntax, and what the manifests rely on.
	c := sts.Spec.Template.Spec.Containers[0]
	f, cleanup, err := natsFiles(b, &sts.Spec.Template.Spec, &c, conf)
	defer cleanup()
	if err != nil {
		t.Errorf("%s: %v", b.dir, err)
		return
	}
	os.Setenv("POD_NAME", sts.Name+"-0") // as the pod's env sets it
	opts, err := server.ProcessConfigFile(f)
	if err != nil {
		t.Errorf("%s: nats.conf: %v", b.dir, err)
		return
	}
	checkNATSAuth(t, b, opts)
	checkNATSExposure(t, b, sts)
	if !opts.JetStream || opts.StoreDir == "" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return strings.HasPrefix(opts.StoreDir, m.MountPath) && m.Name == "data"
	}) {
		t.Errorf("%s: nats.conf: JetStream %v with its store at %q: want it on the data volume", b.dir, opts.JetStream, opts.StoreDir)
	}
	if opts.ServerName != sts.Name+"-0" || len(opts.Routes) != replicas || opts.Cluster.Port != 6222 {
		t.Errorf("%s: nats.conf: server name %q, %d routes, cluster port %d", b.dir, opts.ServerName, len(opts.Routes), opts.Cluster.Port)
	}
	// A capture agent's batches are up to 64 KiB (capture --batch-bytes).
	if opts.MaxPayload < 64<<10 {
		t.Errorf("%s: nats.conf: max_payload %d is under a capture batch", b.dir, opts.MaxPayload)
	}
	for port, want := range map[int]string{opts.Port: "client", opts.HTTPPort: "monitor", opts.Cluster.Port: "cluster"} {
		if !containerExposes(&c, intstr.FromInt32(int32(port))) || !containerExposes(&c, intstr.FromString(want)) {
			t.Errorf("%s: nats.conf listens on %d (%s), which the container does not expose as such", b.dir, port, want)
		}
	}
	if ep, _ := lookup(t, b, all, "ConfigMap", "homemole-endpoints"); ep != nil {
		r, err := strconv.Atoi(ep.(*corev1.ConfigMap).Data["HOMEMOLE_NATS_REPLICAS"])
		if err != nil || r < 1 || r > replicas {
			t.Errorf("%s: HOMEMOLE_NATS_REPLICAS %q: want 1 to %d (the NATS nodes)", b.dir, ep.(*corev1.ConfigMap).Data["HOMEMOLE_NATS_REPLICAS"], replicas)
		}
	}
}

// checkCVJob: one pod per fold, each told its fold.
func checkCVJob(t reporter, b *build, all map[string]*build) {
	t.Helper()
	job, _ := b.find("Job", "trainer-cv").(*batchv1.Job)
	if job == nil {
		return
	}
	if job.Spec.CompletionMode == nil || *job.Spec.CompletionMode != batchv1.IndexedCompletion || job.Spec.Completions == nil {
		t.Errorf("%s: trainer-cv is not an Indexed Job", b.dir)
		return
	}
	if !slices.Contains(job.Spec.Template.Spec.Containers[0].Args, "--fold-index=$(JOB_COMPLETION_INDEX)") {
		t.Errorf("%s: trainer-cv's pods are not told their fold", b.dir)
	}
	run, _ := lookup(t, b, all, "ConfigMap", "homemole-run")
	if run == nil {
		t.Errorf("%s: no homemole-run", b.dir)
		return
	}
	d := run.(*corev1.ConfigMap).Data
	if d["MODE"] != "leave-one-home-out" && d["FOLDS"] != strconv.Itoa(int(*job.Spec.Completions)) {
		t.Errorf("%s: trainer-cv completes %d pods for FOLDS=%s", b.dir, *job.Spec.Completions, d["FOLDS"])
	}
}

var podIndexRef = `metadata.labels['apps.kubernetes.io/pod-index']`

// checkPartitions: a worker split into N partitions (--partitions=N) runs
// as a StatefulSet of N pods, each reading the partition of its ordinal. A
// Deployment cannot: its pods have no ordinal, and a rolling update runs two
// pods of one partition at once.
func checkPartitions(t reporter, b *build) {
	t.Helper()
	for _, o := range b.objs {
		var spec *corev1.PodSpec
		replicas := int32(1)
		switch x := o.obj.(type) {
		case *appsv1.StatefulSet:
			spec = &x.Spec.Template.Spec
			if x.Spec.Replicas != nil {
				replicas = *x.Spec.Replicas
			}
		case *appsv1.Deployment:
			spec = &x.Spec.Template.Spec
		case *appsv1.DaemonSet:
			spec = &x.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			who := fmt.Sprintf("%s: %s/%s container %s", b.dir, o.kind, o.name, c.Name)
			var count, index string
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--partitions="); ok {
					count = v
				}
				if v, ok := strings.CutPrefix(a, "--partition="); ok {
					index = v
				}
			}
			if count == "" || count == "1" {
				continue
			}
			if o.kind != "StatefulSet" {
				t.Errorf("%s: --partitions=%s in a %s, whose pods have no ordinal to take a partition by", who, count, o.kind)
				continue
			}
			if count != strconv.Itoa(int(replicas)) {
				t.Errorf("%s: --partitions=%s for %d replicas: homes of the partitions without a pod would never be read", who, count, replicas)
			}
			m := varRef.FindStringSubmatch(index)
			ok := m != nil && slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
				return e.Name == m[1] && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == podIndexRef
			})
			if !ok {
				t.Errorf("%s: --partition=%q: want $(VAR) with VAR from %s", who, index, podIndexRef)
			}
		}
	}
}

// natsFiles lays out what the NATS container sees under a temporary root:
// nats.conf from its ConfigMap and, where the Secret nats-server is
// mounted, what `go run ./tools/natsauth` puts in it (for the campaign of
// the build, or a one-home one), with the mount paths in the configuration
// moved under the root. It returns the configuration's path there.
func natsFiles(b *build, spec *corev1.PodSpec, c *corev1.Container, conf string) (string, func(), error) {
	root, err := os.MkdirTemp("", "homemole-k8s-nats-")
	if err != nil {
		return "", func() {}, err
	}
	cleanup := func() { os.RemoveAll(root) }
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	var confPath string
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		files := map[string][]byte{}
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == "nats-config":
			confPath = filepath.Join(root, m.MountPath, "nats.conf")
		case v.Secret != nil && v.Secret.SecretName == natsServerSecret.name:
			fs, err := natsServerFiles(b)
			if err != nil {
				return "", cleanup, err
			}
			files = fs
		default:
			continue
		}
		conf = strings.ReplaceAll(conf, m.MountPath+"/", filepath.Join(root, m.MountPath)+"/")
		for name, data := range files {
			p := filepath.Join(root, m.MountPath, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return "", cleanup, err
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return "", cleanup, err
			}
		}
	}
	if confPath == "" {
		return "", cleanup, fmt.Errorf("the NATS container does not mount the ConfigMap nats-config")
	}
	if err := os.MkdirAll(filepath.Dir(confPath), 0o700); err != nil {
		return "", cleanup, err
	}
	return confPath, cleanup, os.WriteFile(confPath, []byte(conf), 0o600)
}

// natsServerFiles is what tools/natsauth puts in the Secret nats-server.
func natsServerFiles(b *build) (map[string][]byte, error) {
	c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{{Name: "home-1"}}}
	for _, o := range b.objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok && cm.Data["campaign.yaml"] != "" {
			if parsed, err := campaign.Parse([]byte(cm.Data["campaign.yaml"])); err == nil {
				c = parsed
			}
		}
	}
	certs, err := natsauth.NewCerts(natsauth.KubernetesNames("homemole"), nil, time.Hour)
	if err != nil {
		return nil, err
	}
	auth, err := natsauth.AccountsConf(natsauth.WithPasswords(natsauth.Users(c)), false)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		natsauth.Files.ServerCA: certs.CA, natsauth.Files.ServerCert: certs.Cert, natsauth.Files.ServerKey: certs.Key,
		natsauth.Files.ServerAuth: []byte(auth),
	}, nil
}

// checkNATSAuth: no client gets in without a user and TLS, and the routes
// between the nodes are encrypted too.
func checkNATSAuth(t reporter, b *build, opts *server.Options) {
	t.Helper()
	switch {
	case opts.NoAuthUser != "":
		t.Errorf("%s: nats.conf lets clients in without a user (no_auth_user %s)", b.dir, opts.NoAuthUser)
	case len(opts.Users)+len(opts.Nkeys) == 0 && opts.TrustedOperators == nil:
		t.Errorf("%s: nats.conf lets clients in without a user: include the accounts of the Secret nats-server (go run ./tools/natsauth)", b.dir)
	}
	for _, u := range opts.Users {
		if u.Account == nil || u.Account.Name == server.DEFAULT_GLOBAL_ACCOUNT {
			t.Errorf("%s: nats.conf: user %s is in no account of its own", b.dir, u.Username)
		}
	}
	if opts.TLSConfig == nil {
		t.Errorf("%s: nats.conf lets clients connect without TLS: passwords and packets would cross the network in the clear", b.dir)
	}
	if opts.Cluster.TLSConfig == nil {
		t.Errorf("%s: nats.conf: the cluster routes run without TLS", b.dir)
	}
}

// checkNATSExposure: the client port admits HomeMole's pods and listed
// addresses, never everyone.
func checkNATSExposure(t reporter, b *build, sts *appsv1.StatefulSet) {
	t.Helper()
	podLabels := labels.Set(sts.Spec.Template.Labels)
	guarded := false
	for _, o := range b.objs {
		np, ok := o.obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(podLabels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		guarded = true
		for _, in := range np.Spec.Ingress {
			client := len(in.Ports) == 0
			for _, p := range in.Ports {
				if p.Port == nil || p.Port.String() == "4222" || p.Port.String() == "client" {
					client = true
				}
			}
			if !client {
				continue
			}
			if len(in.From) == 0 {
				t.Errorf("%s: NetworkPolicy/%s admits port 4222 from anywhere: name HomeMole's pods and the gateways' addresses", b.dir, np.Name)
			}
			for _, peer := range in.From {
				switch {
				case peer.IPBlock != nil && strings.HasSuffix(peer.IPBlock.CIDR, "/0"):
					t.Errorf("%s: NetworkPolicy/%s admits port 4222 from %s, which is anywhere", b.dir, np.Name, peer.IPBlock.CIDR)
				case peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0:
					t.Errorf("%s: NetworkPolicy/%s admits port 4222 from every namespace", b.dir, np.Name)
				}
			}
		}
	}
	if !guarded {
		t.Errorf("%s: no NetworkPolicy guards ingress to the NATS pods: port 4222 is open to everyone", b.dir)
	}
}
