package k8s

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestSecurityKubernetesNATS (finding 4): the NATS the manifests ship asks
// every client for a user and TLS, and admits port 4222 from HomeMole's pods
// and the listed gateway addresses only. The same checks, run on the base
// with its accounts include dropped and its client port opened (what the
// manifests shipped before), must report both.
func TestSecurityKubernetesNATS(t *testing.T) {
	var shipped recorder
	shipped.run(func() { checkNATS(&shipped, kustomize(&shipped, "base"), nil) })
	if len(shipped.errs) > 0 {
		t.Errorf("the shipped NATS fails its checks:\n%s", strings.Join(shipped.errs, "\n"))
	}

	var old recorder
	old.run(func() {
		b := kustomize(&old, "base")
		cm := b.find("ConfigMap", "nats-config").(*corev1.ConfigMap)
		var kept []string
		for _, line := range strings.Split(cm.Data["nats.conf"], "\n") {
			if !strings.Contains(line, "include") {
				kept = append(kept, line)
			}
		}
		cm.Data["nats.conf"] = strings.Join(kept, "\n")
		np := b.find("NetworkPolicy", "nats").(*networkingv1.NetworkPolicy)
		np.Spec.Ingress[0].From = nil
		checkNATS(&old, b, nil)
	})
	all := strings.Join(old.errs, "\n")
	anonymous := strings.Contains(all, "lets clients in without a user")
	open := strings.Contains(all, "admits port 4222 from anywhere")
	if !anonymous || !open {
		t.Errorf("an anonymous nats.conf reported: %v, an open 4222 reported: %v; reports:\n%s", anonymous, open, all)
	}
	t.Logf("attack: connect to the Kubernetes NATS without a user, or from outside HomeMole | expected: the manifests refuse, the checks catch a regression | observed: %d reports on the shipped NATS; anonymous nats.conf reported %v, open 4222 reported %v", len(shipped.errs), anonymous, open)
}
