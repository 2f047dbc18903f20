package main

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

type dfCommand struct {
	Instruction string `json:"instruction"` // lower case: from, run, copy, user, healthcheck, ...
	Line        int    `json:"line"`
	Original    string `json:"original"`
	// Details is BuildKit's typed instruction (e.g. HEALTHCHECK: Health.Test/Interval; COPY: From, SourcePaths,
	// DestPath, Chown; RUN/CMD/ENTRYPOINT: CmdLine, PrependShell; USER: User).
	Details any `json:"details"`
}

type dfStage struct {
	Name     string `json:"name"`
	BaseName string `json:"baseName"`
	// BaseImage is BaseName with the global ARG defaults expanded (what `docker build` pulls without
	// --build-arg); "" when it names an earlier stage.
	BaseImage string      `json:"baseImage"`
	Platform  string      `json:"platform,omitempty"`
	Line      int         `json:"line"`
	Commands  []dfCommand `json:"commands"`
}

type dfWarning struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
	Line    int    `json:"line"`
	URL     string `json:"url,omitempty"`
}

type dfResult struct {
	Valid    bool              `json:"valid"`
	Errors   []string          `json:"errors"`
	Warnings []dfWarning       `json:"warnings"`
	MetaArgs map[string]string `json:"metaArgs"`
	Stages   []dfStage         `json:"stages"`
}

// runDockerfile parses like `docker build` does (BuildKit's parser and instruction builder) and collects the
// lint warnings BuildKit reports while doing so (the `docker build --check` rules that run at parse time,
// e.g. FromAsCasing, StageNameCasing, MaintainerDeprecated, JSONArgsRecommended, NoEmptyContinuation).
// Lint warnings make the result invalid: the Dockerfile is meant to be warning-free.
func runDockerfile(file string, out io.Writer, human bool) (any, bool, error) {
	data, err := readInput(file)
	if err != nil {
		return nil, false, err
	}
	res := &dfResult{Errors: []string{}, Warnings: []dfWarning{}, MetaArgs: map[string]string{}, Stages: []dfStage{}}
	warn := func(rule, description, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		res.Warnings = append(res.Warnings, dfWarning{Rule: rule, Message: msg, Line: line, URL: url})
	}
	ast, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("parse: %v", err))
	} else {
		for _, w := range ast.Warnings {
			line := 0
			if w.Location != nil {
				line = w.Location.Start.Line
			}
			rule := "parser"
			if w.URL == linter.RuleNoEmptyContinuation.URL {
				rule = linter.RuleNoEmptyContinuation.Name
			}
			res.Warnings = append(res.Warnings, dfWarning{Rule: rule, Message: w.Short, Line: line, URL: w.URL})
		}
		lint := linter.New(&linter.Config{Warn: warn})
		// Parse-time rules that `docker build --check` reports and instructions.Parse does not run itself.
		checkCasing(ast.AST, lint)
		stages, metaArgs, err := instructions.Parse(ast.AST, lint)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("instructions: %v", err))
		}
		lintStages(stages, metaArgs, lint)
		var env []string
		for _, a := range metaArgs {
			for _, kv := range a.Args {
				v := ""
				if kv.Value != nil {
					v = *kv.Value
				}
				res.MetaArgs[kv.Key] = v
				env = append(env, kv.Key+"="+v)
			}
		}
		lex := shell.NewLex(parser.DefaultEscapeToken)
		stageNames := map[string]bool{}
		for _, s := range stages {
			st := dfStage{Name: s.Name, BaseName: s.BaseName, Platform: s.Platform, Commands: []dfCommand{}}
			if !stageNames[strings.ToLower(s.BaseName)] {
				img, _, err := lex.ProcessWord(s.BaseName, shell.EnvsFromSlice(env))
				if err != nil {
					res.Errors = append(res.Errors, fmt.Sprintf("FROM %s: %v", s.BaseName, err))
				}
				st.BaseImage = img
			}
			stageNames[strings.ToLower(s.Name)] = true
			if len(s.Location) > 0 {
				st.Line = s.Location[0].Start.Line
			}
			for _, c := range s.Commands {
				line := 0
				if loc := c.Location(); len(loc) > 0 {
					line = loc[0].Start.Line
				}
				st.Commands = append(st.Commands, dfCommand{Instruction: strings.ToLower(c.Name()), Line: line,
					Original: originalAt(ast.AST, line), Details: c})
			}
			res.Stages = append(res.Stages, st)
		}
	}
	res.Valid = len(res.Errors) == 0 && len(res.Warnings) == 0
	if human {
		for _, e := range res.Errors {
			fmt.Fprintf(out, "FAIL %s: %s\n", file, e)
		}
		for _, w := range res.Warnings {
			fmt.Fprintf(out, "WARN %s:%d %s: %s\n", file, w.Line, w.Rule, w.Message)
		}
		names := make([]string, 0, len(res.Stages))
		for _, s := range res.Stages {
			base := s.BaseImage
			if base == "" {
				base = "stage " + s.BaseName
			}
			names = append(names, fmt.Sprintf("%s (FROM %s)", s.Name, base))
		}
		fmt.Fprintf(out, "kubevalidate: %s: %d stage(s): %s; %d error(s), %d warning(s)\n", file, len(res.Stages),
			strings.Join(names, ", "), len(res.Errors), len(res.Warnings))
	}
	return res, res.Valid, nil
}

func originalAt(root *parser.Node, line int) string {
	for _, n := range root.Children {
		if n.StartLine == line {
			return n.Original
		}
	}
	return ""
}

// checkCasing reports instructions whose keyword casing differs from the majority (ConsistentInstructionCasing),
// as BuildKit's dockerfile2llb does (FromAsCasing is reported by instructions.Parse itself).
func checkCasing(root *parser.Node, lint *linter.Linter) {
	upper, lower := 0, 0
	for _, n := range root.Children {
		kw := strings.Fields(n.Original)
		if len(kw) == 0 {
			continue
		}
		if kw[0] == strings.ToUpper(kw[0]) {
			upper++
		} else if kw[0] == strings.ToLower(kw[0]) {
			lower++
		}
	}
	wantUpper := upper >= lower
	for _, n := range root.Children {
		kw := strings.Fields(n.Original)
		if len(kw) == 0 {
			continue
		}
		loc := n.Location()
		if (wantUpper && kw[0] != strings.ToUpper(kw[0])) || (!wantUpper && kw[0] != strings.ToLower(kw[0])) {
			want := "uppercase"
			if !wantUpper {
				want = "lowercase"
			}
			msg := linter.RuleConsistentInstructionCasing.Format(kw[0], want)
			lint.Run(&linter.RuleConsistentInstructionCasing, loc, msg)
		}
	}
}

var (
	secretKeyRe   = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	secretAllowRe = regexp.MustCompile(`(?i)(?:_|^)(?:public)(?:_|$)`)
)

// lintStages runs the rules that BuildKit's dockerfile2llb applies while converting the stages (it cannot be
// imported without the whole LLB solver): JSONArgsRecommended, MultipleInstructionsDisallowed,
// LegacyKeyValueFormat, WorkdirRelativePath, SecretsUsedInArgOrEnv, ReservedStageName, DuplicateStageName.
func lintStages(stages []instructions.Stage, metaArgs []instructions.ArgCommand, lint *linter.Linter) {
	secret := func(instr, key string, loc []parser.Range) {
		if secretKeyRe.MatchString(key) && !secretAllowRe.MatchString(key) {
			lint.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instr, key))
		}
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			secret("ARG", kv.Key, a.Location())
		}
	}
	names := map[string]bool{}
	for _, st := range stages {
		if st.Name != "" {
			if st.Name == "context" || st.Name == "scratch" {
				lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
			}
			if names[st.Name] {
				lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
			}
			names[st.Name] = true
		}
		used := map[string][]parser.Range{}
		once := func(c instructions.Command) {
			if prev, ok := used[c.Name()]; ok {
				lint.Run(&linter.RuleMultipleInstructionsDisallowed, prev, linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
			}
			used[c.Name()] = c.Location()
		}
		workdirSet := false
		for _, c := range st.Commands {
			switch t := c.(type) {
			case *instructions.CmdCommand:
				once(t)
				if t.PrependShell {
					lint.Run(&linter.RuleJSONArgsRecommended, t.Location(), linter.RuleJSONArgsRecommended.Format(t.Name()))
				}
			case *instructions.EntrypointCommand:
				once(t)
				if t.PrependShell {
					lint.Run(&linter.RuleJSONArgsRecommended, t.Location(), linter.RuleJSONArgsRecommended.Format(t.Name()))
				}
			case *instructions.HealthCheckCommand:
				once(t)
			case *instructions.EnvCommand:
				for _, kv := range t.Env {
					if kv.NoDelim {
						lint.Run(&linter.RuleLegacyKeyValueFormat, t.Location(), linter.RuleLegacyKeyValueFormat.Format(t.Name()))
					}
					secret("ENV", kv.Key, t.Location())
				}
			case *instructions.LabelCommand:
				for _, kv := range t.Labels {
					if kv.NoDelim {
						lint.Run(&linter.RuleLegacyKeyValueFormat, t.Location(), linter.RuleLegacyKeyValueFormat.Format(t.Name()))
					}
				}
			case *instructions.ArgCommand:
				for _, kv := range t.Args {
					secret("ARG", kv.Key, t.Location())
				}
			case *instructions.WorkdirCommand:
				if !path.IsAbs(t.Path) && !workdirSet {
					lint.Run(&linter.RuleWorkdirRelativePath, t.Location(), linter.RuleWorkdirRelativePath.Format(t.Path))
				}
				workdirSet = true
			}
		}
	}
}
