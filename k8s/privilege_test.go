package k8s

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// allowedCaps are the only capabilities a container may add: AF_PACKET
// capture needs CAP_NET_RAW. CAP_NET_ADMIN would only buy a receive
// buffer past net.core.rmem_max in the recvmsg fallback (the default ring
// needs none), and it lets a process reconfigure the gateway's network.
var allowedCaps = []corev1.Capability{"NET_RAW"}

// checkPrivilege holds pods to least privilege: no privileged containers,
// no capability beyond allowedCaps, and pods that get any privilege (the
// host's network, an added capability) run under the runtime's default
// seccomp profile and serve metrics on their cluster address only, not on
// every interface of the host.
func checkPrivilege(t reporter, who string, spec *corev1.PodSpec) {
	t.Helper()
	privileged := spec.HostNetwork
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cwho := who + " container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s is privileged: add the one capability it needs instead", cwho)
		}
		if sc.Capabilities != nil {
			for _, add := range sc.Capabilities.Add {
				privileged = true
				if !slices.Contains(allowedCaps, add) {
					t.Errorf("%s adds capability %s: only %v are allowed", cwho, add, allowedCaps)
				}
			}
			if len(sc.Capabilities.Add) > 0 && !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s adds capabilities without dropping ALL first", cwho)
			}
		}
	}
	if !privileged {
		return
	}
	seccomp := func(sc *corev1.SeccompProfile) bool {
		return sc != nil && sc.Type == corev1.SeccompProfileTypeRuntimeDefault
	}
	podSeccomp := spec.SecurityContext != nil && seccomp(spec.SecurityContext.SeccompProfile)
	for _, c := range spec.Containers {
		cwho := who + " container " + c.Name
		if !podSeccomp && (c.SecurityContext == nil || !seccomp(c.SecurityContext.SeccompProfile)) {
			t.Errorf("%s has privileges and no seccomp profile: set seccompProfile {type: RuntimeDefault}", cwho)
		}
		if !spec.HostNetwork {
			continue
		}
		podIP := ""
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
				podIP = e.Name
			}
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--metrics-addr="); ok {
				if podIP == "" || !strings.HasPrefix(v, "$("+podIP+"):") {
					t.Errorf("%s: --metrics-addr=%s on the host network listens on every interface of the node: bind it to the pod's address, $(POD_IP):PORT with POD_IP from the downward API (status.podIP)", cwho, v)
				}
			}
		}
	}
}

// TestSecurityCaptureLeastPrivilege: the capture DaemonSet, the one pod
// on a home gateway's host network, keeps to least privilege in every
// overlay, and still gets the one capability capture needs.
func TestSecurityCaptureLeastPrivilege(t *testing.T) {
	checked := 0
	for _, dir := range kustomizations(t) {
		b := kustomize(t, dir)
		ds, ok := b.find("DaemonSet", "capture").(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		checked++
		checkPrivilege(t, dir+": DaemonSet/capture", &ds.Spec.Template.Spec)
		c := ds.Spec.Template.Spec.Containers[0]
		if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || !slices.Contains(c.SecurityContext.Capabilities.Add, "NET_RAW") {
			t.Errorf("%s: capture lacks CAP_NET_RAW, which AF_PACKET capture needs", dir)
		}
	}
	t.Logf("attack: a compromised capture pod on a gateway's host network uses NET_ADMIN, no seccomp profile, or metrics on every host interface | expected: none of these in any overlay | observed: %d capture DaemonSets checked, failures above if any", checked)
}
