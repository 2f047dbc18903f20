package main

// Dapr CRDs, mirroring the Go API types of github.com/dapr/dapr v1.16 (pkg/apis/{components,resiliency,
// configuration,subscriptions}): same JSON field names and types, so strict decoding rejects a misspelled or
// misplaced field as the Dapr operator would ignore it. Importing the real packages would drag in
// controller-runtime and client-go, hence the copy.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type DaprNameValuePair struct {
	Name         string          `json:"name"`
	Value        json.RawMessage `json:"value,omitempty"`
	SecretKeyRef *DaprSecretRef  `json:"secretKeyRef,omitempty"`
	EnvRef       string          `json:"envRef,omitempty"`
}

type DaprSecretRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type DaprComponent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Type         string              `json:"type"`
		Version      string              `json:"version"`
		IgnoreErrors bool                `json:"ignoreErrors"`
		Metadata     []DaprNameValuePair `json:"metadata"`
		InitTimeout  string              `json:"initTimeout"`
	} `json:"spec,omitempty"`
	Auth struct {
		SecretStore string `json:"secretStore"`
	} `json:"auth,omitempty"`
	Scopes []string `json:"scopes,omitempty"`
}

type daprRetry struct {
	Policy      string `json:"policy,omitempty"`
	Duration    string `json:"duration,omitempty"`
	MaxInterval string `json:"maxInterval,omitempty"`
	MaxRetries  *int   `json:"maxRetries,omitempty"`
	Matching    *struct {
		HTTPStatusCodes string `json:"httpStatusCodes,omitempty"`
		GRPCStatusCodes string `json:"gRPCStatusCodes,omitempty"`
	} `json:"matching,omitempty"`
}

type daprCircuitBreaker struct {
	MaxRequests int    `json:"maxRequests,omitempty"`
	Interval    string `json:"interval,omitempty"`
	Timeout     string `json:"timeout,omitempty"`
	Trip        string `json:"trip,omitempty"`
}

type daprPolicyNames struct {
	Timeout        string `json:"timeout,omitempty"`
	Retry          string `json:"retry,omitempty"`
	CircuitBreaker string `json:"circuitBreaker,omitempty"`
}

type daprEndpointPolicyNames struct {
	daprPolicyNames         `json:",inline"`
	CircuitBreakerCacheSize int `json:"circuitBreakerCacheSize,omitempty"`
}

type daprActorPolicyNames struct {
	daprPolicyNames         `json:",inline"`
	CircuitBreakerScope     string `json:"circuitBreakerScope,omitempty"`
	CircuitBreakerCacheSize int    `json:"circuitBreakerCacheSize,omitempty"`
}

type DaprResiliency struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Policies struct {
			Timeouts        map[string]string             `json:"timeouts,omitempty"`
			Retries         map[string]daprRetry          `json:"retries,omitempty"`
			CircuitBreakers map[string]daprCircuitBreaker `json:"circuitBreakers,omitempty"`
		} `json:"policies"`
		Targets struct {
			Apps       map[string]daprEndpointPolicyNames `json:"apps,omitempty"`
			Actors     map[string]daprActorPolicyNames    `json:"actors,omitempty"`
			Components map[string]struct {
				Inbound  daprPolicyNames `json:"inbound,omitempty"`
				Outbound daprPolicyNames `json:"outbound,omitempty"`
			} `json:"components,omitempty"`
		} `json:"targets"`
	} `json:"spec,omitempty"`
	Scopes []string `json:"scopes,omitempty"`
}

type daprMetricSpec struct {
	Enabled          *bool `json:"enabled"`
	RecordErrorCodes *bool `json:"recordErrorCodes,omitempty"`
	HTTP             *struct {
		IncreasedCardinality *bool    `json:"increasedCardinality,omitempty"`
		PathMatching         []string `json:"pathMatching,omitempty"`
		ExcludeVerbs         *bool    `json:"excludeVerbs,omitempty"`
	} `json:"http,omitempty"`
	Rules []struct {
		Name   string `json:"name"`
		Labels []struct {
			Name  string            `json:"name"`
			Regex map[string]string `json:"regex"`
		} `json:"labels"`
	} `json:"rules,omitempty"`
	LatencyDistributionBuckets *[]int `json:"latencyDistributionBuckets,omitempty"`
}

type daprPipeline struct {
	Handlers []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		Selector *struct {
			Fields []struct {
				Field string `json:"field"`
				Value string `json:"value"`
			} `json:"fields"`
		} `json:"selector,omitempty"`
	} `json:"handlers"`
}

type daprAPIRule struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Protocol string `json:"protocol,omitempty"`
}

type DaprConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		AppHTTPPipeline *daprPipeline `json:"appHttpPipeline,omitempty"`
		HTTPPipeline    *daprPipeline `json:"httpPipeline,omitempty"`
		Tracing         *struct {
			SamplingRate string `json:"samplingRate"`
			Stdout       *bool  `json:"stdout,omitempty"`
			Zipkin       *struct {
				EndpointAddress string `json:"endpointAddress"`
			} `json:"zipkin,omitempty"`
			Otel *struct {
				Protocol        string `json:"protocol"`
				EndpointAddress string `json:"endpointAddress"`
				IsSecure        *bool  `json:"isSecure"`
			} `json:"otel,omitempty"`
		} `json:"tracing,omitempty"`
		Metric *daprMetricSpec `json:"metric,omitempty"`
		// Metrics is the newer spelling of metric; both are accepted by Dapr.
		Metrics *daprMetricSpec `json:"metrics,omitempty"`
		MTLS    *struct {
			Enabled                 *bool   `json:"enabled"`
			WorkloadCertTTL         *string `json:"workloadCertTTL,omitempty"`
			AllowedClockSkew        *string `json:"allowedClockSkew,omitempty"`
			SentryAddress           string  `json:"sentryAddress"`
			ControlPlaneTrustDomain string  `json:"controlPlaneTrustDomain"`
			TokenValidators         []struct {
				Name    string          `json:"name"`
				Options json.RawMessage `json:"options,omitempty"`
			} `json:"tokenValidators,omitempty"`
		} `json:"mtls,omitempty"`
		Secrets *struct {
			Scopes []struct {
				StoreName      string   `json:"storeName"`
				DefaultAccess  string   `json:"defaultAccess,omitempty"`
				AllowedSecrets []string `json:"allowedSecrets,omitempty"`
				DeniedSecrets  []string `json:"deniedSecrets,omitempty"`
			} `json:"scopes"`
		} `json:"secrets,omitempty"`
		AccessControl *struct {
			DefaultAction string `json:"defaultAction,omitempty"`
			TrustDomain   string `json:"trustDomain,omitempty"`
			Policies      []struct {
				AppID         string `json:"appId"`
				DefaultAction string `json:"defaultAction,omitempty"`
				TrustDomain   string `json:"trustDomain,omitempty"`
				Namespace     string `json:"namespace,omitempty"`
				Operations    []struct {
					Name     string   `json:"name"`
					Action   string   `json:"action"`
					HTTPVerb []string `json:"httpVerb,omitempty"`
				} `json:"operations,omitempty"`
			} `json:"policies,omitempty"`
		} `json:"accessControl,omitempty"`
		NameResolution *struct {
			Component     string          `json:"component"`
			Version       string          `json:"version"`
			Configuration json.RawMessage `json:"configuration"`
		} `json:"nameResolution,omitempty"`
		Features []struct {
			Name    string `json:"name"`
			Enabled *bool  `json:"enabled"`
		} `json:"features,omitempty"`
		API *struct {
			Allowed []daprAPIRule `json:"allowed,omitempty"`
			Denied  []daprAPIRule `json:"denied,omitempty"`
		} `json:"api,omitempty"`
		Components *struct {
			Deny []string `json:"deny,omitempty"`
		} `json:"components,omitempty"`
		Logging *struct {
			APILogging *struct {
				Enabled          *bool `json:"enabled,omitempty"`
				ObfuscateURLs    *bool `json:"obfuscateURLs,omitempty"`
				OmitHealthChecks *bool `json:"omitHealthChecks,omitempty"`
			} `json:"apiLogging,omitempty"`
		} `json:"logging,omitempty"`
		Wasm *struct {
			StrictSandbox bool `json:"strictSandbox,omitempty"`
		} `json:"wasm,omitempty"`
		Workflow *struct {
			MaxConcurrentWorkflowInvocations int32 `json:"maxConcurrentWorkflowInvocations,omitempty"`
			MaxConcurrentActivityInvocations int32 `json:"maxConcurrentActivityInvocations,omitempty"`
		} `json:"workflow,omitempty"`
	} `json:"spec,omitempty"`
}

type DaprSubscription struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Pubsubname string            `json:"pubsubname"`
		Topic      string            `json:"topic"`
		Metadata   map[string]string `json:"metadata,omitempty"`
		Routes     struct {
			Rules []struct {
				Match string `json:"match"`
				Path  string `json:"path"`
			} `json:"rules,omitempty"`
			Default string `json:"default,omitempty"`
		} `json:"routes"`
		DeadLetterTopic string `json:"deadLetterTopic,omitempty"`
		BulkSubscribe   struct {
			Enabled            bool  `json:"enabled"`
			MaxMessagesCount   int32 `json:"maxMessagesCount,omitempty"`
			MaxAwaitDurationMs int32 `json:"maxAwaitDurationMs,omitempty"`
		} `json:"bulkSubscribe,omitempty"`
	} `json:"spec,omitempty"`
	Scopes []string `json:"scopes,omitempty"`
}

func checkDaprComponent(e *errList, c *DaprComponent) {
	if c.Spec.Type == "" {
		e.add("spec.type: required (e.g. pubsub.kafka)")
	} else if !strings.Contains(c.Spec.Type, ".") {
		e.add("spec.type: %q is not <building block>.<name> (e.g. pubsub.kafka)", c.Spec.Type)
	}
	if c.Spec.Version == "" {
		e.add("spec.version: required (e.g. v1)")
	}
	if c.Spec.InitTimeout != "" {
		if _, err := time.ParseDuration(c.Spec.InitTimeout); err != nil {
			e.add("spec.initTimeout: %v", err)
		}
	}
	seen := map[string]bool{}
	for i, m := range c.Spec.Metadata {
		f := fmt.Sprintf("spec.metadata[%d]", i)
		if m.Name == "" {
			e.add("%s.name: required", f)
		}
		if seen[m.Name] {
			e.add("%s.name: duplicate metadata %q", f, m.Name)
		}
		seen[m.Name] = true
		sources := 0
		if len(m.Value) > 0 {
			sources++
		}
		if m.SecretKeyRef != nil {
			sources++
			if m.SecretKeyRef.Name == "" {
				e.add("%s.secretKeyRef.name: required", f)
			}
		}
		if m.EnvRef != "" {
			sources++
		}
		if sources != 1 {
			e.add("%s (%s): exactly one of value, secretKeyRef and envRef must be set, got %d", f, m.Name, sources)
		}
	}
	if c.Spec.Type == "pubsub.kafka" {
		if !seen["brokers"] {
			e.add("spec.metadata: pubsub.kafka requires brokers")
		}
		if !seen["authType"] {
			e.add("spec.metadata: pubsub.kafka requires authType (none, password, mtls, oidc, awsiam)")
		}
		if v := metadataString(c, "authType"); v == "password" && (!seen["saslUsername"] || !seen["saslPassword"]) {
			e.add("spec.metadata: authType password requires saslUsername and saslPassword")
		}
		if v := metadataString(c, "saslMechanism"); v != "" && v != "SHA-512" && v != "SHA-256" && v != "PLAINTEXT" {
			e.add("spec.metadata: saslMechanism must be SHA-512, SHA-256 or PLAINTEXT, got %q", v)
		}
		if v := metadataString(c, "initialOffset"); v != "" && v != "oldest" && v != "newest" {
			e.add("spec.metadata: initialOffset must be oldest or newest, got %q", v)
		}
	}
}

func metadataString(c *DaprComponent, name string) string {
	for _, m := range c.Spec.Metadata {
		if m.Name == name && len(m.Value) > 0 {
			var s string
			if json.Unmarshal(m.Value, &s) == nil {
				return s
			}
			return string(m.Value)
		}
	}
	return ""
}

func checkDaprResiliency(e *errList, r *DaprResiliency) {
	p := r.Spec.Policies
	for name, d := range p.Timeouts {
		if _, err := time.ParseDuration(d); err != nil {
			e.add("spec.policies.timeouts.%s: %v", name, err)
		}
	}
	for name, rt := range p.Retries {
		f := "spec.policies.retries." + name
		switch rt.Policy {
		case "constant", "exponential":
		default:
			e.add("%s.policy: must be constant or exponential, got %q", f, rt.Policy)
		}
		for field, d := range map[string]string{"duration": rt.Duration, "maxInterval": rt.MaxInterval} {
			if d != "" {
				if _, err := time.ParseDuration(d); err != nil {
					e.add("%s.%s: %v", f, field, err)
				}
			}
		}
		if rt.MaxRetries != nil && *rt.MaxRetries < -1 {
			e.add("%s.maxRetries: must be >= -1 (-1: forever)", f)
		}
	}
	for name, cb := range p.CircuitBreakers {
		for field, d := range map[string]string{"interval": cb.Interval, "timeout": cb.Timeout} {
			if d != "" {
				if _, err := time.ParseDuration(d); err != nil {
					e.add("spec.policies.circuitBreakers.%s.%s: %v", name, field, err)
				}
			}
		}
	}
	ref := func(f string, n daprPolicyNames) {
		if _, ok := p.Timeouts[n.Timeout]; n.Timeout != "" && !ok {
			if _, err := time.ParseDuration(n.Timeout); err != nil {
				e.add("%s.timeout: no timeout policy named %q", f, n.Timeout)
			}
		}
		if _, ok := p.Retries[n.Retry]; n.Retry != "" && !ok {
			e.add("%s.retry: no retry policy named %q", f, n.Retry)
		}
		if _, ok := p.CircuitBreakers[n.CircuitBreaker]; n.CircuitBreaker != "" && !ok {
			e.add("%s.circuitBreaker: no circuit breaker named %q", f, n.CircuitBreaker)
		}
	}
	t := r.Spec.Targets
	for name, c := range t.Components {
		ref("spec.targets.components."+name+".inbound", c.Inbound)
		ref("spec.targets.components."+name+".outbound", c.Outbound)
	}
	for name, a := range t.Apps {
		ref("spec.targets.apps."+name, a.daprPolicyNames)
	}
	for name, a := range t.Actors {
		ref("spec.targets.actors."+name, a.daprPolicyNames)
	}
	if len(t.Components)+len(t.Apps)+len(t.Actors) == 0 {
		e.add("spec.targets: no targets, the policies apply to nothing")
	}
}

func checkDaprConfiguration(e *errList, c *DaprConfiguration) {
	if tr := c.Spec.Tracing; tr != nil {
		if rate, err := strconv.ParseFloat(tr.SamplingRate, 64); err != nil || rate < 0 || rate > 1 {
			e.add("spec.tracing.samplingRate: must be a number between 0 and 1 as a string, got %q", tr.SamplingRate)
		}
		if o := tr.Otel; o != nil {
			if o.EndpointAddress == "" {
				e.add("spec.tracing.otel.endpointAddress: required")
			}
			if o.Protocol != "grpc" && o.Protocol != "http" {
				e.add("spec.tracing.otel.protocol: must be grpc or http, got %q", o.Protocol)
			}
		}
		if z := tr.Zipkin; z != nil && z.EndpointAddress == "" {
			e.add("spec.tracing.zipkin.endpointAddress: required")
		}
	}
}

func checkDaprSubscription(e *errList, s *DaprSubscription) {
	if s.Spec.Pubsubname == "" {
		e.add("spec.pubsubname: required")
	}
	if s.Spec.Topic == "" {
		e.add("spec.topic: required")
	}
	if s.Spec.Routes.Default == "" && len(s.Spec.Routes.Rules) == 0 {
		e.add("spec.routes: a default route or rules are required")
	}
}
