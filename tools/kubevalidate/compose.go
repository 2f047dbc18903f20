package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type composeResult struct {
	Valid   bool            `json:"valid"`
	Errors  []string        `json:"errors"`
	Project json.RawMessage `json:"project"`
}

// runCompose loads the files as `docker compose config` does (compose-go: compose-spec JSON schema
// validation, interpolation with the defaults written in the file, normalization, consistency checks such
// as depends_on naming a defined service) without reading the caller's environment or a .env file, so the
// result does not depend on the machine. The normalized project is returned as JSON.
func runCompose(files []string, out io.Writer, human bool) (any, bool, error) {
	res := &composeResult{Errors: []string{}, Project: json.RawMessage("null")}
	abs := make([]string, 0, len(files))
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			return nil, false, err
		}
		abs = append(abs, a)
	}
	opts, err := cli.NewProjectOptions(abs,
		cli.WithWorkingDirectory(filepath.Dir(abs[0])),
		cli.WithEnv([]string{}),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, false, err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	} else {
		js, err := project.MarshalJSON()
		if err != nil {
			return nil, false, err
		}
		res.Project = js
	}
	res.Valid = len(res.Errors) == 0
	if human {
		for _, e := range res.Errors {
			fmt.Fprintf(out, "FAIL %s: %s\n", strings.Join(files, ","), e)
		}
		if project != nil {
			names := project.ServiceNames()
			sort.Strings(names)
			fmt.Fprintf(out, "kubevalidate: %s: project %q, %d services (%s)\n", strings.Join(files, ","), project.Name,
				len(names), strings.Join(names, ", "))
		}
	}
	return res, res.Valid, nil
}
