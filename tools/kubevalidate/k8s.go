package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// registry maps "apiVersion/kind" to a new typed object. Anything else is rejected: an unknown kind or an
// apiVersion that no longer exists (extensions/v1beta1 Ingress, autoscaling/v2beta2, policy/v1beta1) fails.
var registry = map[string]func() any{
	"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                func() any { return &corev1.Secret{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"v1/Namespace":                             func() any { return &corev1.Namespace{} },
	"v1/PersistentVolumeClaim":                 func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                   func() any { return &corev1.Pod{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"batch/v1/Job":                             func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                         func() any { return &batchv1.CronJob{} },
	"networking.k8s.io/v1/Ingress":             func() any { return &networkingv1.Ingress{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"autoscaling/v2/HorizontalPodAutoscaler":   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"dapr.io/v1alpha1/Component":               func() any { return &DaprComponent{} },
	"dapr.io/v1alpha1/Resiliency":              func() any { return &DaprResiliency{} },
	"dapr.io/v1alpha1/Configuration":           func() any { return &DaprConfiguration{} },
	"dapr.io/v2alpha1/Subscription":            func() any { return &DaprSubscription{} },
}

type k8sObject struct {
	Source     string          `json:"source"`
	Doc        int             `json:"doc"`
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Name       string          `json:"name"`
	Namespace  string          `json:"namespace,omitempty"`
	Object     json.RawMessage `json:"object"`
	typed      any
}

func (o *k8sObject) ref() string { return fmt.Sprintf("%s/%s", o.Kind, o.Name) }
func (o *k8sObject) where() string {
	return fmt.Sprintf("%s#%d %s/%s", o.Source, o.Doc, o.Kind, o.Name)
}

type k8sResult struct {
	Valid        bool           `json:"valid"`
	Counts       map[string]int `json:"counts"`
	Errors       []string       `json:"errors"`
	ExternalRefs []string       `json:"externalRefs"`
	Objects      []*k8sObject   `json:"objects"`
}

func runK8s(files []string, out io.Writer, human bool) (any, bool, error) {
	res := &k8sResult{Counts: map[string]int{}, Errors: []string{}, ExternalRefs: []string{}, Objects: []*k8sObject{}}
	for _, f := range files {
		data, err := readInput(f)
		if err != nil {
			return nil, false, err
		}
		name := f
		if f == "-" {
			name = "<stdin>"
		}
		objs, errs := decodeManifests(name, data)
		res.Objects = append(res.Objects, objs...)
		res.Errors = append(res.Errors, errs...)
	}
	for _, o := range res.Objects {
		res.Counts[o.Kind]++
		for _, e := range checkObject(o) {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %s", o.where(), e))
		}
	}
	xerrs, external := crossCheck(res.Objects)
	res.Errors = append(res.Errors, xerrs...)
	res.ExternalRefs = external
	if len(res.Objects) == 0 {
		res.Errors = append(res.Errors, "no Kubernetes objects found")
	}
	res.Valid = len(res.Errors) == 0
	if human {
		for _, e := range res.Errors {
			fmt.Fprintf(out, "FAIL %s\n", e)
		}
		for _, r := range res.ExternalRefs {
			fmt.Fprintf(out, "note: must exist in the cluster (not in these manifests): %s\n", r)
		}
		kinds := make([]string, 0, len(res.Counts))
		for k, n := range res.Counts {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
		sort.Strings(kinds)
		if res.Valid {
			fmt.Fprintf(out, "kubevalidate: %d objects valid (%s)\n", len(res.Objects), strings.Join(kinds, ", "))
		} else {
			fmt.Fprintf(out, "kubevalidate: INVALID: %d error(s) (%d objects decoded)\n", len(res.Errors), len(res.Objects))
		}
	}
	return res, res.Valid, nil
}

// decodeManifests splits multi-document YAML and strictly decodes every non-empty document.
func decodeManifests(source string, data []byte) ([]*k8sObject, []string) {
	var objs []*k8sObject
	var errs []string
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s#%d: cannot read YAML document: %v", source, doc, err))
			break
		}
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s#%d: invalid YAML: %v", source, doc, err))
			continue
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue // only comments (helm template emits "# Source:" headers) or an empty document
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			errs = append(errs, fmt.Sprintf("%s#%d: not a Kubernetes object: %v", source, doc, err))
			continue
		}
		o := &k8sObject{Source: source, Doc: doc, APIVersion: head.APIVersion, Kind: head.Kind,
			Name: head.Metadata.Name, Namespace: head.Metadata.Namespace, Object: js}
		if head.APIVersion == "" || head.Kind == "" {
			errs = append(errs, fmt.Sprintf("%s: apiVersion and kind are required", o.where()))
			continue
		}
		newObj, ok := registry[head.APIVersion+"/"+head.Kind]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: unsupported apiVersion/kind %s %s", o.where(), head.APIVersion, head.Kind))
			continue
		}
		typed := newObj()
		strictErrs, err := sigsjson.UnmarshalStrict(js, typed, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", o.where(), err))
			continue
		}
		if len(strictErrs) > 0 {
			for _, se := range strictErrs {
				errs = append(errs, fmt.Sprintf("%s: %v", o.where(), se))
			}
			continue
		}
		o.typed = typed
		objs = append(objs, o)
	}
	return objs, errs
}

// ----------------------------------------------------------------------------------------- per-object checks

type errList []string

func (e *errList) add(format string, args ...any) { *e = append(*e, fmt.Sprintf(format, args...)) }
func (e *errList) addAll(field string, msgs []string) {
	for _, m := range msgs {
		e.add("%s: %s", field, m)
	}
}

func checkObject(o *k8sObject) []string {
	var e errList
	switch t := o.typed.(type) {
	case *corev1.Service:
		checkMeta(&e, t.ObjectMeta, true)
		checkService(&e, t)
	case *appsv1.Deployment:
		checkMeta(&e, t.ObjectMeta, false)
		if t.Spec.Replicas != nil && *t.Spec.Replicas < 0 {
			e.add("spec.replicas: must be >= 0")
		}
		checkSelector(&e, "spec.selector", t.Spec.Selector, t.Spec.Template.Labels)
		checkPodSpec(&e, "spec.template.spec", &t.Spec.Template.Spec, false)
		checkLabels(&e, "spec.template.metadata", t.Spec.Template.ObjectMeta)
	case *appsv1.StatefulSet:
		checkMeta(&e, t.ObjectMeta, false)
		checkSelector(&e, "spec.selector", t.Spec.Selector, t.Spec.Template.Labels)
		checkPodSpec(&e, "spec.template.spec", &t.Spec.Template.Spec, false)
	case *batchv1.Job:
		checkMeta(&e, t.ObjectMeta, false)
		checkLabels(&e, "spec.template.metadata", t.Spec.Template.ObjectMeta)
		checkPodSpec(&e, "spec.template.spec", &t.Spec.Template.Spec, true)
		if t.Spec.BackoffLimit != nil && *t.Spec.BackoffLimit < 0 {
			e.add("spec.backoffLimit: must be >= 0")
		}
	case *batchv1.CronJob:
		checkMeta(&e, t.ObjectMeta, false)
		if t.Spec.Schedule == "" {
			e.add("spec.schedule: required")
		}
		checkPodSpec(&e, "spec.jobTemplate.spec.template.spec", &t.Spec.JobTemplate.Spec.Template.Spec, true)
	case *corev1.Pod:
		checkMeta(&e, t.ObjectMeta, false)
		checkPodSpec(&e, "spec", &t.Spec, false)
	case *networkingv1.Ingress:
		checkMeta(&e, t.ObjectMeta, false)
		checkIngress(&e, t)
	case *autoscalingv2.HorizontalPodAutoscaler:
		checkMeta(&e, t.ObjectMeta, false)
		checkHPA(&e, t)
	case *policyv1.PodDisruptionBudget:
		checkMeta(&e, t.ObjectMeta, false)
		if (t.Spec.MinAvailable == nil) == (t.Spec.MaxUnavailable == nil) {
			e.add("spec: exactly one of minAvailable and maxUnavailable must be set")
		}
		checkIntOrPercent(&e, "spec.minAvailable", t.Spec.MinAvailable)
		checkIntOrPercent(&e, "spec.maxUnavailable", t.Spec.MaxUnavailable)
		checkSelector(&e, "spec.selector", t.Spec.Selector, nil)
	case *corev1.Secret:
		checkMeta(&e, t.ObjectMeta, false)
		for k := range t.Data {
			e.addAll("data["+k+"]", validation.IsConfigMapKey(k))
		}
		for k := range t.StringData {
			e.addAll("stringData["+k+"]", validation.IsConfigMapKey(k))
		}
	case *corev1.ConfigMap:
		checkMeta(&e, t.ObjectMeta, false)
		for k := range t.Data {
			e.addAll("data["+k+"]", validation.IsConfigMapKey(k))
		}
	case *corev1.ServiceAccount:
		checkMeta(&e, t.ObjectMeta, false)
	case *corev1.Namespace:
		checkMeta(&e, t.ObjectMeta, true)
	case *corev1.PersistentVolumeClaim, *networkingv1.NetworkPolicy, *rbacv1.Role, *rbacv1.RoleBinding:
		checkMeta(&e, metaOf(o.typed), false)
	case *DaprComponent:
		checkMeta(&e, t.ObjectMeta, false)
		checkDaprComponent(&e, t)
	case *DaprResiliency:
		checkMeta(&e, t.ObjectMeta, false)
		checkDaprResiliency(&e, t)
	case *DaprConfiguration:
		checkMeta(&e, t.ObjectMeta, false)
		checkDaprConfiguration(&e, t)
	case *DaprSubscription:
		checkMeta(&e, t.ObjectMeta, false)
		checkDaprSubscription(&e, t)
	}
	return e
}

func metaOf(obj any) metav1.ObjectMeta {
	v := reflect.ValueOf(obj).Elem().FieldByName("ObjectMeta")
	if !v.IsValid() {
		return metav1.ObjectMeta{}
	}
	return v.Interface().(metav1.ObjectMeta)
}

func checkMeta(e *errList, m metav1.ObjectMeta, dns1035 bool) {
	switch {
	case m.Name == "":
		e.add("metadata.name: required")
	case dns1035:
		e.addAll("metadata.name", validation.IsDNS1035Label(m.Name))
	default:
		e.addAll("metadata.name", validation.IsDNS1123Subdomain(m.Name))
	}
	if m.Namespace != "" {
		e.addAll("metadata.namespace", validation.IsDNS1123Label(m.Namespace))
	}
	checkLabels(e, "metadata", m)
}

func checkLabels(e *errList, field string, m metav1.ObjectMeta) {
	for k, v := range m.Labels {
		e.addAll(field+".labels["+k+"]", validation.IsQualifiedName(k))
		e.addAll(field+".labels["+k+"]", validation.IsValidLabelValue(v))
	}
	for k := range m.Annotations {
		e.addAll(field+".annotations["+k+"]", validation.IsQualifiedName(strings.ToLower(k)))
	}
}

func checkSelector(e *errList, field string, sel *metav1.LabelSelector, podLabels map[string]string) {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		e.add("%s: required and must not be empty", field)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		e.add("%s: %v", field, err)
		return
	}
	if podLabels != nil && !s.Matches(labels.Set(podLabels)) {
		e.add("%s: does not match the pod template labels %v (the API server rejects this)", field, podLabels)
	}
}

func checkIntOrPercent(e *errList, field string, v *intstr.IntOrString) {
	if v == nil {
		return
	}
	if v.Type == intstr.String {
		if !strings.HasSuffix(v.StrVal, "%") {
			e.add("%s: a string value must be a percentage like \"50%%\", got %q", field, v.StrVal)
		}
	} else if v.IntVal < 0 {
		e.add("%s: must be >= 0", field)
	}
}

// exactlyOne counts the non-nil pointer fields of a struct (a "one of" union such as VolumeSource).
func setFields(v any) []string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	var set []string
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Field(i)
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			set = append(set, rv.Type().Field(i).Name)
		}
	}
	return set
}

func checkPodSpec(e *errList, field string, spec *corev1.PodSpec, job bool) {
	if len(spec.Containers) == 0 {
		e.add("%s.containers: at least one container is required", field)
	}
	switch rp := spec.RestartPolicy; {
	case job && rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure:
		e.add("%s.restartPolicy: a Job's pods must use Never or OnFailure, got %q", field, rp)
	case !job && rp != "" && rp != corev1.RestartPolicyAlways:
		e.add("%s.restartPolicy: must be Always, got %q", field, rp)
	}
	if spec.ServiceAccountName != "" {
		e.addAll(field+".serviceAccountName", validation.IsDNS1123Subdomain(spec.ServiceAccountName))
	}
	volumes := map[string]bool{}
	for i, v := range spec.Volumes {
		f := fmt.Sprintf("%s.volumes[%d]", field, i)
		e.addAll(f+".name", validation.IsDNS1123Label(v.Name))
		if volumes[v.Name] {
			e.add("%s.name: duplicate volume %q", f, v.Name)
		}
		volumes[v.Name] = true
		if n := len(setFields(v.VolumeSource)); n != 1 {
			e.add("%s: exactly one volume source must be set, got %d", f, n)
		}
		if v.Secret != nil && v.Secret.SecretName == "" {
			e.add("%s.secret.secretName: required", f)
		}
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for i, c := range all {
		f := fmt.Sprintf("%s.containers[%d]", field, i-len(spec.InitContainers))
		if i < len(spec.InitContainers) {
			f = fmt.Sprintf("%s.initContainers[%d]", field, i)
		}
		e.addAll(f+".name", validation.IsDNS1123Label(c.Name))
		if names[c.Name] {
			e.add("%s.name: duplicate container name %q", f, c.Name)
		}
		names[c.Name] = true
		checkContainer(e, f, &c, volumes)
	}
	if sc := spec.SecurityContext; sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		e.add("%s.securityContext: runAsNonRoot with runAsUser 0 can never start", field)
	}
}

func checkContainer(e *errList, f string, c *corev1.Container, volumes map[string]bool) {
	if strings.TrimSpace(c.Image) == "" {
		e.add("%s.image: required", f)
	}
	ports := map[string]bool{}
	for j, p := range c.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, j)
		e.addAll(pf+".containerPort", validation.IsValidPortNum(int(p.ContainerPort)))
		if p.Name != "" {
			e.addAll(pf+".name", validation.IsValidPortName(p.Name))
			if ports[p.Name] {
				e.add("%s.name: duplicate port name %q", pf, p.Name)
			}
			ports[p.Name] = true
		}
	}
	envNames := map[string]bool{}
	for j, v := range c.Env {
		ef := fmt.Sprintf("%s.env[%d]", f, j)
		if v.Name == "" {
			e.add("%s.name: required", ef)
		} else {
			e.addAll(ef+".name", validation.IsEnvVarName(v.Name))
		}
		if envNames[v.Name] {
			e.add("%s.name: duplicate environment variable %q (the last one wins silently)", ef, v.Name)
		}
		envNames[v.Name] = true
		if v.Value != "" && v.ValueFrom != nil {
			e.add("%s: value and valueFrom are mutually exclusive", ef)
		}
		if v.ValueFrom != nil {
			if n := len(setFields(v.ValueFrom)); n != 1 {
				e.add("%s.valueFrom: exactly one source must be set, got %d", ef, n)
			}
			if r := v.ValueFrom.SecretKeyRef; r != nil && (r.Name == "" || r.Key == "") {
				e.add("%s.valueFrom.secretKeyRef: name and key are required", ef)
			}
			if r := v.ValueFrom.ConfigMapKeyRef; r != nil && (r.Name == "" || r.Key == "") {
				e.add("%s.valueFrom.configMapKeyRef: name and key are required", ef)
			}
		}
	}
	for j, ef := range c.EnvFrom {
		if (ef.ConfigMapRef == nil) == (ef.SecretRef == nil) {
			e.add("%s.envFrom[%d]: exactly one of configMapRef and secretRef must be set", f, j)
		}
	}
	mounts := map[string]bool{}
	for j, m := range c.VolumeMounts {
		mf := fmt.Sprintf("%s.volumeMounts[%d]", f, j)
		if !volumes[m.Name] {
			e.add("%s.name: no volume named %q in the pod", mf, m.Name)
		}
		if !path.IsAbs(m.MountPath) {
			e.add("%s.mountPath: must be an absolute path, got %q", mf, m.MountPath)
		}
		if mounts[m.MountPath] {
			e.add("%s.mountPath: %q is mounted twice", mf, m.MountPath)
		}
		mounts[m.MountPath] = true
	}
	checkProbe(e, f+".livenessProbe", c.LivenessProbe, ports, true)
	checkProbe(e, f+".readinessProbe", c.ReadinessProbe, ports, false)
	checkProbe(e, f+".startupProbe", c.StartupProbe, ports, true)
	for name, limit := range c.Resources.Limits {
		if req, ok := c.Resources.Requests[name]; ok && req.Cmp(limit) > 0 {
			e.add("%s.resources.requests[%s]: %s is more than the limit %s", f, name, req.String(), limit.String())
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			e.add("%s.securityContext: runAsNonRoot with runAsUser 0 can never start", f)
		}
		if sc.Privileged != nil && *sc.Privileged && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			e.add("%s.securityContext: privileged requires allowPrivilegeEscalation", f)
		}
	}
}

func checkProbe(e *errList, f string, p *corev1.Probe, ports map[string]bool, mustSucceedOnce bool) {
	if p == nil {
		return
	}
	if n := len(setFields(p.ProbeHandler)); n != 1 {
		e.add("%s: exactly one handler (exec, httpGet, tcpSocket, grpc) must be set, got %d", f, n)
	}
	if mustSucceedOnce && p.SuccessThreshold > 1 {
		e.add("%s.successThreshold: must be 1 for liveness and startup probes", f)
	}
	for name, v := range map[string]int32{"initialDelaySeconds": p.InitialDelaySeconds, "timeoutSeconds": p.TimeoutSeconds,
		"periodSeconds": p.PeriodSeconds, "successThreshold": p.SuccessThreshold, "failureThreshold": p.FailureThreshold} {
		if v < 0 {
			e.add("%s.%s: must be >= 0", f, name)
		}
	}
	checkPort := func(pf string, port intstr.IntOrString) {
		if port.Type == intstr.String {
			if !ports[port.StrVal] {
				e.add("%s.port: the container has no port named %q", pf, port.StrVal)
			}
		} else {
			e.addAll(pf+".port", validation.IsValidPortNum(int(port.IntVal)))
		}
	}
	if h := p.HTTPGet; h != nil {
		if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
			e.add("%s.httpGet.path: must start with /", f)
		}
		checkPort(f+".httpGet", h.Port)
	}
	if t := p.TCPSocket; t != nil {
		checkPort(f+".tcpSocket", t.Port)
	}
}

func checkService(e *errList, s *corev1.Service) {
	if len(s.Spec.Ports) == 0 && s.Spec.Type != corev1.ServiceTypeExternalName {
		e.add("spec.ports: at least one port is required")
	}
	names := map[string]bool{}
	for i, p := range s.Spec.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			e.add("%s.name: required when the Service has more than one port", f)
		}
		if p.Name != "" {
			e.addAll(f+".name", validation.IsDNS1123Label(p.Name))
			if names[p.Name] {
				e.add("%s.name: duplicate port name %q", f, p.Name)
			}
			names[p.Name] = true
		}
		e.addAll(f+".port", validation.IsValidPortNum(int(p.Port)))
		if p.TargetPort.Type == intstr.String {
			e.addAll(f+".targetPort", validation.IsValidPortName(p.TargetPort.StrVal))
		} else if p.TargetPort.IntVal != 0 {
			e.addAll(f+".targetPort", validation.IsValidPortNum(int(p.TargetPort.IntVal)))
		}
		if p.NodePort != 0 && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			e.add("%s.nodePort: only NodePort and LoadBalancer Services have node ports", f)
		}
	}
	switch s.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		e.add("spec.type: unsupported value %q", s.Spec.Type)
	}
	for k, v := range s.Spec.Selector {
		e.addAll("spec.selector["+k+"]", validation.IsQualifiedName(k))
		e.addAll("spec.selector["+k+"]", validation.IsValidLabelValue(v))
	}
}

func checkIngress(e *errList, ing *networkingv1.Ingress) {
	if ing.Spec.DefaultBackend == nil && len(ing.Spec.Rules) == 0 {
		e.add("spec: either defaultBackend or rules must be specified")
	}
	if c := ing.Spec.IngressClassName; c != nil {
		e.addAll("spec.ingressClassName", validation.IsDNS1123Subdomain(*c))
	}
	for i, r := range ing.Spec.Rules {
		f := fmt.Sprintf("spec.rules[%d]", i)
		if r.Host != "" {
			h := strings.TrimPrefix(r.Host, "*.")
			e.addAll(f+".host", validation.IsDNS1123Subdomain(h))
		}
		if r.HTTP == nil {
			continue
		}
		if len(r.HTTP.Paths) == 0 {
			e.add("%s.http.paths: at least one path is required", f)
		}
		for j, p := range r.HTTP.Paths {
			pf := fmt.Sprintf("%s.http.paths[%d]", f, j)
			if p.PathType == nil {
				e.add("%s.pathType: required", pf)
			} else {
				switch *p.PathType {
				case networkingv1.PathTypeExact, networkingv1.PathTypePrefix:
					if !strings.HasPrefix(p.Path, "/") {
						e.add("%s.path: must be an absolute path", pf)
					}
					for _, bad := range []string{"//", "/./", "/../", "%2f", "%2F"} {
						if strings.Contains(p.Path, bad) {
							e.add("%s.path: must not contain %q", pf, bad)
						}
					}
				case networkingv1.PathTypeImplementationSpecific:
					if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
						e.add("%s.path: must be an absolute path", pf)
					}
				default:
					e.add("%s.pathType: unsupported value %q", pf, *p.PathType)
				}
			}
			checkBackend(e, pf+".backend", &p.Backend)
		}
	}
	if b := ing.Spec.DefaultBackend; b != nil {
		checkBackend(e, "spec.defaultBackend", b)
	}
	for i, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			e.addAll(fmt.Sprintf("spec.tls[%d].hosts", i), validation.IsDNS1123Subdomain(strings.TrimPrefix(h, "*.")))
		}
	}
}

func checkBackend(e *errList, f string, b *networkingv1.IngressBackend) {
	if (b.Service == nil) == (b.Resource == nil) {
		e.add("%s: exactly one of service and resource must be set", f)
		return
	}
	if s := b.Service; s != nil {
		e.addAll(f+".service.name", validation.IsDNS1035Label(s.Name))
		if (s.Port.Name == "") == (s.Port.Number == 0) {
			e.add("%s.service.port: exactly one of name and number must be set", f)
		}
	}
}

func checkHPA(e *errList, h *autoscalingv2.HorizontalPodAutoscaler) {
	r := h.Spec.ScaleTargetRef
	if r.Kind == "" || r.Name == "" {
		e.add("spec.scaleTargetRef: kind and name are required")
	}
	if h.Spec.MaxReplicas < 1 {
		e.add("spec.maxReplicas: must be >= 1")
	}
	if m := h.Spec.MinReplicas; m != nil && (*m < 1 || *m > h.Spec.MaxReplicas) {
		e.add("spec.minReplicas: must be between 1 and maxReplicas (%d), got %d", h.Spec.MaxReplicas, *m)
	}
	for i, m := range h.Spec.Metrics {
		f := fmt.Sprintf("spec.metrics[%d]", i)
		set := setFields(m)
		if len(set) != 1 {
			e.add("%s: exactly one metric source must be set, got %v", f, set)
			continue
		}
		if !strings.EqualFold(set[0], string(m.Type)) && !(m.Type == autoscalingv2.ContainerResourceMetricSourceType && set[0] == "ContainerResource") {
			e.add("%s.type: %q does not match the source that is set (%s)", f, m.Type, set[0])
		}
		if rs := m.Resource; rs != nil {
			switch rs.Target.Type {
			case autoscalingv2.UtilizationMetricType:
				if rs.Target.AverageUtilization == nil {
					e.add("%s.resource.target.averageUtilization: required for type Utilization", f)
				}
			case autoscalingv2.AverageValueMetricType:
				if rs.Target.AverageValue == nil {
					e.add("%s.resource.target.averageValue: required for type AverageValue", f)
				}
			default:
				e.add("%s.resource.target.type: must be Utilization or AverageValue for a resource metric", f)
			}
		}
	}
}

// ----------------------------------------------------------------------------------------- cross-object checks

type workload struct {
	obj    *k8sObject
	labels map[string]string
	spec   *corev1.PodSpec
}

func crossCheck(objs []*k8sObject) (errs []string, external []string) {
	byRef := map[string]*k8sObject{}
	var workloads []workload
	for _, o := range objs {
		key := o.Namespace + "/" + o.ref()
		if prev, dup := byRef[key]; dup {
			errs = append(errs, fmt.Sprintf("%s: duplicate of %s", o.where(), prev.where()))
		}
		byRef[key] = o
		switch t := o.typed.(type) {
		case *appsv1.Deployment:
			workloads = append(workloads, workload{o, t.Spec.Template.Labels, &t.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{o, t.Spec.Template.Labels, &t.Spec.Template.Spec})
		case *batchv1.Job:
			workloads = append(workloads, workload{o, t.Spec.Template.Labels, &t.Spec.Template.Spec})
		}
	}
	find := func(o *k8sObject, kind, name string) *k8sObject { return byRef[o.Namespace+"/"+kind+"/"+name] }
	matching := func(sel labels.Selector) []workload {
		var out []workload
		for _, w := range workloads {
			if w.obj.Kind != "Job" && sel.Matches(labels.Set(w.labels)) {
				out = append(out, w)
			}
		}
		return out
	}
	// external: referenced objects that are not in these manifests -> how they are used.
	ext := map[string]map[string]bool{}
	addExt := func(ref, use string) {
		if ext[ref] == nil {
			ext[ref] = map[string]bool{}
		}
		ext[ref][use] = true
	}
	for _, o := range objs {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Sprintf("%s: %s", o.where(), fmt.Sprintf(format, args...)))
		}
		switch t := o.typed.(type) {
		case *corev1.Service:
			if len(t.Spec.Selector) == 0 {
				continue
			}
			pods := matching(labels.SelectorFromSet(t.Spec.Selector))
			if len(pods) == 0 {
				fail("spec.selector %v selects no Deployment/StatefulSet in these manifests", t.Spec.Selector)
				continue
			}
			for _, p := range t.Spec.Ports {
				if p.TargetPort.Type != intstr.String {
					continue
				}
				for _, w := range pods {
					if !podHasPort(w.spec, p.TargetPort.StrVal) {
						fail("spec.ports[%s].targetPort %q: %s has no container port of that name", p.Name, p.TargetPort.StrVal, w.obj.ref())
					}
				}
			}
		case *networkingv1.Ingress:
			var backends []*networkingv1.IngressServiceBackend
			if b := t.Spec.DefaultBackend; b != nil && b.Service != nil {
				backends = append(backends, b.Service)
			}
			for _, r := range t.Spec.Rules {
				if r.HTTP != nil {
					for _, p := range r.HTTP.Paths {
						if p.Backend.Service != nil {
							backends = append(backends, p.Backend.Service)
						}
					}
				}
			}
			for _, b := range backends {
				so := find(o, "Service", b.Name)
				if so == nil {
					fail("backend Service %q is not in these manifests", b.Name)
					continue
				}
				if !serviceHasPort(so.typed.(*corev1.Service), b.Port) {
					fail("backend Service %q has no port %s", b.Name, portString(b.Port))
				}
			}
			for _, tls := range t.Spec.TLS {
				if tls.SecretName != "" && find(o, "Secret", tls.SecretName) == nil {
					addExt("Secret/"+tls.SecretName, "TLS certificate of "+o.ref())
				}
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			r := t.Spec.ScaleTargetRef
			target := find(o, r.Kind, r.Name)
			if target == nil {
				fail("spec.scaleTargetRef %s/%s is not in these manifests", r.Kind, r.Name)
			} else if target.APIVersion != r.APIVersion {
				fail("spec.scaleTargetRef.apiVersion %q does not match %s (%s)", r.APIVersion, target.ref(), target.APIVersion)
			}
			for _, m := range t.Spec.Metrics {
				if m.Resource == nil || target == nil {
					continue
				}
				if d, ok := target.typed.(*appsv1.Deployment); ok {
					for _, c := range d.Spec.Template.Spec.Containers {
						if _, has := c.Resources.Requests[m.Resource.Name]; !has && m.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
							fail("scales on %s utilization but container %q of %s has no %s request", m.Resource.Name, c.Name, target.ref(), m.Resource.Name)
						}
					}
				}
			}
		case *DaprComponent:
			for _, m := range t.Spec.Metadata {
				if r := m.SecretKeyRef; r != nil && r.Name != "" && find(o, "Secret", r.Name) == nil {
					addExt("Secret/"+r.Name, "key "+r.Key)
				}
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(t.Spec.Selector)
			if err == nil && len(matching(sel)) == 0 {
				fail("spec.selector selects no Deployment/StatefulSet in these manifests")
			}
		}
	}
	for _, w := range workloads {
		for _, r := range podRefs(w.spec) {
			if find(w.obj, r.kind, r.name) == nil {
				addExt(r.kind+"/"+r.name, r.use)
			}
		}
	}
	for ref, uses := range ext {
		list := make([]string, 0, len(uses))
		for u := range uses {
			list = append(list, u)
		}
		sort.Strings(list)
		external = append(external, fmt.Sprintf("%s (%s)", ref, strings.Join(list, "; ")))
	}
	sort.Strings(external)
	return errs, external
}

func podHasPort(spec *corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func serviceHasPort(s *corev1.Service, port networkingv1.ServiceBackendPort) bool {
	for _, p := range s.Spec.Ports {
		if (port.Name != "" && p.Name == port.Name) || (port.Number != 0 && p.Port == port.Number) {
			return true
		}
	}
	return false
}

func portString(p networkingv1.ServiceBackendPort) string {
	if p.Name != "" {
		return fmt.Sprintf("%q", p.Name)
	}
	return fmt.Sprintf("%d", p.Number)
}

type podRef struct{ kind, name, use string }

// podRefs lists the Secrets, ConfigMaps and ServiceAccount a pod needs (optional ones excluded).
func podRefs(spec *corev1.PodSpec) []podRef {
	var refs []podRef
	opt := func(b *bool) bool { return b != nil && *b }
	if spec.ServiceAccountName != "" && spec.ServiceAccountName != "default" {
		refs = append(refs, podRef{"ServiceAccount", spec.ServiceAccountName, "serviceAccountName"})
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil && !opt(v.Secret.Optional) {
			refs = append(refs, podRef{"Secret", v.Secret.SecretName, "volume"})
		}
		if v.ConfigMap != nil && !opt(v.ConfigMap.Optional) {
			refs = append(refs, podRef{"ConfigMap", v.ConfigMap.Name, "volume"})
		}
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		for _, ev := range c.Env {
			if ev.ValueFrom == nil {
				continue
			}
			if r := ev.ValueFrom.SecretKeyRef; r != nil && !opt(r.Optional) {
				refs = append(refs, podRef{"Secret", r.Name, "key " + r.Key})
			}
			if r := ev.ValueFrom.ConfigMapKeyRef; r != nil && !opt(r.Optional) {
				refs = append(refs, podRef{"ConfigMap", r.Name, "key " + r.Key})
			}
		}
		for _, ef := range c.EnvFrom {
			if r := ef.SecretRef; r != nil && !opt(r.Optional) {
				refs = append(refs, podRef{"Secret", r.Name, "envFrom"})
			}
			if r := ef.ConfigMapRef; r != nil && !opt(r.Optional) {
				refs = append(refs, podRef{"ConfigMap", r.Name, "envFrom"})
			}
		}
	}
	return refs
}
