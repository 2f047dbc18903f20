// kubevalidate: offline checks of Taskflow's deployment artefacts with the parsers the real tools use.
//
//	kubevalidate k8s [--json] [FILE|-]...   Kubernetes manifests (multi-document YAML, e.g. `helm template`
//	                                        output): each object is decoded strictly (unknown or duplicate
//	                                        fields, wrong types, wrong-case keys fail) into the k8s.io/api
//	                                        types of its apiVersion/kind, then checked for what the API server
//	                                        would reject (names, selectors, ports, probes, references between
//	                                        objects). Dapr Component/Resiliency/Configuration/Subscription are
//	                                        decoded strictly into structs that mirror Dapr 1.16's API types.
//	kubevalidate dockerfile [--json] FILE   parses with BuildKit's Dockerfile parser (the one `docker build`
//	                                        uses), builds the typed instructions and reports BuildKit's lint
//	                                        warnings (`docker build --check` rules that run at parse time).
//	kubevalidate compose [--json] FILE...   loads with compose-go (the loader of `docker compose`): the
//	                                        compose-spec JSON schema, interpolation, depends_on consistency.
//
// Exit status: 0 valid, 1 invalid, 2 usage or I/O error. With --json the result is printed as JSON on stdout
// (also when invalid); otherwise a human summary.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	asJSON := false
	var files []string
	for _, a := range args {
		switch a {
		case "--json":
			asJSON = true
		case "-h", "--help":
			usage()
		default:
			files = append(files, a)
		}
	}
	var (
		result any
		ok     bool
		err    error
	)
	switch cmd {
	case "k8s":
		if len(files) == 0 {
			files = []string{"-"}
		}
		result, ok, err = runK8s(files, os.Stdout, !asJSON)
	case "dockerfile":
		if len(files) != 1 {
			usage()
		}
		result, ok, err = runDockerfile(files[0], os.Stdout, !asJSON)
	case "compose":
		if len(files) == 0 {
			usage()
		}
		result, ok, err = runCompose(files, os.Stdout, !asJSON)
	case "version":
		fmt.Println("kubevalidate (k8s.io/api v0.34, BuildKit dockerfile parser v0.26, compose-go v2.16)")
		return
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevalidate: %v\n", err)
		os.Exit(2)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(result); err != nil {
			fmt.Fprintf(os.Stderr, "kubevalidate: %v\n", err)
			os.Exit(2)
		}
	}
	if !ok {
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kubevalidate k8s [--json] [FILE|-]...     validate Kubernetes (+ Dapr) manifests
  kubevalidate dockerfile [--json] FILE     parse + lint a Dockerfile (BuildKit parser)
  kubevalidate compose [--json] FILE...     load a compose file (compose-go, compose-spec schema)
`)
	os.Exit(2)
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}
