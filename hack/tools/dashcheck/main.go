// Command dashcheck checks Grafana dashboard JSON files against Grafana's dashboard model and
// against the rules the Verbund dashboards follow.
//
//	dashcheck dashboards/*.json
//
// Each file is decoded strictly into the dashboard model of the Grafana Foundation SDK
// (unknown fields, missing required fields and wrong types are errors, down to the panels'
// options and the Prometheus queries) and validated with the SDK's constraints. On top of that:
//
//   - uid and title are set, and the uid is unique across the files given;
//   - the tags contain "verbund";
//   - a template variable "datasource" of type datasource exists;
//   - every panel id is unique within its dashboard, every panel has a grid position within
//     the 24 columns, and no two panels of the dashboard's top level overlap;
//   - every panel with queries, rows' panels included, uses the datasource uid ${datasource},
//     and so does each of its queries that names a datasource;
//   - every query is a Prometheus query with a non-empty expr and a refId unique in its panel;
//   - every variable a query uses ($name or ${name}) is defined by the dashboard or is one of
//     Grafana's built-in variables ($__range, $__rate_interval, ...).
//
// It prints "ok FILE: N panels, M queries" for each good file and exits 1 after naming every
// problem it found.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

const (
	wantTag        = "verbund"
	datasourceVar  = "datasource"
	datasourceUID  = "${datasource}"
	datasourceType = "prometheus"
)

// Grafana's global variables that queries may use without a template variable.
var builtinVars = map[string]bool{
	"__interval": true, "__interval_ms": true, "__rate_interval": true, "__rate_interval_ms": true,
	"__range": true, "__range_s": true, "__range_ms": true, "__from": true, "__to": true,
	"__dashboard": true, "__org": true, "__user": true, "__name": true, "__timeFilter": true,
}

// $name, ${name}, ${name:format} and [[name]].
var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

type checker struct {
	file     string
	problems []string
}

func (c *checker) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("%s: %s", c.file, fmt.Sprintf(format, args...)))
}

func main() {
	if len(os.Args) < 2 || slices.Contains(os.Args[1:], "-h") || slices.Contains(os.Args[1:], "--help") {
		fmt.Fprintln(os.Stderr, "usage: dashcheck DASHBOARD.json...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()

	uids := map[string]string{}
	failed := false
	for _, file := range os.Args[1:] {
		c := &checker{file: file}
		panels, queries, uid := c.check()
		if uid != "" {
			if other, dup := uids[uid]; dup {
				c.fail("uid %q is also used by %s", uid, other)
			} else {
				uids[uid] = file
			}
		}
		if len(c.problems) > 0 {
			failed = true
			for _, p := range c.problems {
				fmt.Fprintln(os.Stderr, "error:", p)
			}
			continue
		}
		fmt.Printf("ok %s: %d panels, %d queries\n", file, panels, queries)
	}
	if failed {
		os.Exit(1)
	}
}

// buildErrors turns the SDK's error lists into a flat list; the SDK returns empty lists as
// non-nil errors, which mean no error.
func buildErrors(err error) []string {
	if err == nil {
		return nil
	}
	var list cog.BuildErrors
	if errors.As(err, &list) {
		out := make([]string, 0, len(list))
		for _, e := range list {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

func (c *checker) check() (panels, queries int, uid string) {
	raw, err := os.ReadFile(c.file)
	if err != nil {
		c.fail("%v", err)
		return 0, 0, ""
	}
	if !json.Valid(raw) {
		var v any
		c.fail("not valid JSON: %v", json.Unmarshal(raw, &v))
		return 0, 0, ""
	}

	// The strict decoding reports every field the model does not know or that has the wrong
	// type, including the panels' options and the queries. It drops panels that decode without
	// error, so the model to inspect comes from the ordinary decoding below.
	var strict dashboard.Dashboard
	for _, e := range buildErrors(strict.UnmarshalJSONStrict(raw)) {
		c.fail("Grafana dashboard model: %s", e)
	}
	var d dashboard.Dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		c.fail("Grafana dashboard model: %v", err)
		return 0, 0, ""
	}
	for _, e := range buildErrors(d.Validate()) {
		c.fail("Grafana dashboard model: %s", e)
	}

	if d.Uid == nil || strings.TrimSpace(*d.Uid) == "" {
		c.fail("uid is empty")
	} else {
		uid = *d.Uid
	}
	if d.Title == nil || strings.TrimSpace(*d.Title) == "" {
		c.fail("title is empty")
	}
	if !slices.Contains(d.Tags, wantTag) {
		c.fail("tags %q lack %q", d.Tags, wantTag)
	}

	vars := map[string]bool{}
	hasDatasource := false
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Name == datasourceVar {
			if v.Type != dashboard.VariableTypeDatasource {
				c.fail("template variable %q has type %q, want %q", datasourceVar, v.Type, dashboard.VariableTypeDatasource)
			} else if v.Query == nil || v.Query.String == nil || *v.Query.String != datasourceType {
				c.fail("template variable %q must select %s data sources (query %q)", datasourceVar, datasourceType, datasourceType)
			} else {
				hasDatasource = true
			}
		}
	}
	if !hasDatasource && !vars[datasourceVar] {
		c.fail("no template variable %q of type datasource", datasourceVar)
	}

	ids := map[uint32]string{}
	seenID := func(id uint32, title string) {
		if other, dup := ids[id]; dup {
			c.fail("panel %q: id %d is also used by panel %q", title, id, other)
		}
		ids[id] = title
	}
	type placed struct {
		title string
		pos   dashboard.GridPos
	}
	var top []placed
	overlaps := func(title string, pos *dashboard.GridPos) {
		if pos == nil {
			return
		}
		for _, o := range top {
			if pos.X < o.pos.X+o.pos.W && o.pos.X < pos.X+pos.W && pos.Y < o.pos.Y+o.pos.H && o.pos.Y < pos.Y+pos.H {
				c.fail("panel %q overlaps panel %q", title, o.title)
			}
		}
		top = append(top, placed{title, *pos})
	}
	var visit func(p *dashboard.Panel, where string)
	visit = func(p *dashboard.Panel, where string) {
		panels++
		title := panelTitle(p)
		if where != "" {
			title = where + " / " + title
		}
		if p.Title == nil || strings.TrimSpace(*p.Title) == "" {
			c.fail("panel %q: title is empty", title)
		}
		if p.Id == nil {
			c.fail("panel %q: no id", title)
		} else {
			seenID(*p.Id, title)
		}
		if p.GridPos == nil {
			c.fail("panel %q: no gridPos", title)
		} else if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W == 0 || p.GridPos.H == 0 {
			c.fail("panel %q: gridPos %+v does not fit the 24 columns", title, *p.GridPos)
		}
		queries += c.checkTargets(p, title, vars)
	}
	for i, item := range d.Panels {
		switch {
		case item.Panel != nil:
			visit(item.Panel, "")
			overlaps(panelTitle(item.Panel), item.Panel.GridPos)
		case item.RowPanel != nil:
			row := item.RowPanel
			rowTitle := "row"
			if row.Title != nil {
				rowTitle = "row " + *row.Title
			}
			seenID(row.Id, rowTitle)
			overlaps(rowTitle, row.GridPos)
			for j := range row.Panels {
				visit(&row.Panels[j], rowTitle)
			}
		default:
			c.fail("panels[%d] is neither a panel nor a row", i)
		}
	}
	return panels, queries, uid
}

func panelTitle(p *dashboard.Panel) string {
	if p.Title != nil && *p.Title != "" {
		return *p.Title
	}
	if p.Id != nil {
		return fmt.Sprintf("#%d (%s)", *p.Id, p.Type)
	}
	return "(" + p.Type + ")"
}

func (c *checker) checkTargets(p *dashboard.Panel, title string, vars map[string]bool) int {
	if len(p.Targets) == 0 {
		return 0
	}
	if p.Datasource == nil || p.Datasource.Uid == nil || *p.Datasource.Uid != datasourceUID {
		c.fail("panel %q: has queries, so its datasource must be {\"type\": %q, \"uid\": %q}", title, datasourceType, datasourceUID)
	} else if p.Datasource.Type == nil || *p.Datasource.Type != datasourceType {
		c.fail("panel %q: datasource type must be %q", title, datasourceType)
	}
	refIDs := map[string]bool{}
	for i, t := range p.Targets {
		q, ok := t.(*prometheus.Dataquery)
		if !ok {
			c.fail("panel %q: targets[%d] is not a Prometheus query (%T); set its datasource type to %q", title, i, t, datasourceType)
			continue
		}
		ref := ""
		if q.RefId != nil {
			ref = strings.TrimSpace(*q.RefId)
		}
		name := fmt.Sprintf("targets[%d]", i)
		if ref == "" {
			c.fail("panel %q: %s has no refId", title, name)
		} else {
			name = "query " + ref
			if refIDs[ref] {
				c.fail("panel %q: refId %q is used twice", title, ref)
			}
			refIDs[ref] = true
		}
		if strings.TrimSpace(q.Expr) == "" {
			c.fail("panel %q: %s has an empty expr", title, name)
		}
		if q.Datasource != nil && (q.Datasource.Uid == nil || *q.Datasource.Uid != datasourceUID) {
			c.fail("panel %q: %s names a datasource other than %q", title, name, datasourceUID)
		}
		for _, m := range varRef.FindAllStringSubmatch(q.Expr, -1) {
			v := m[1] + m[2] + m[3]
			if !vars[v] && !builtinVars[v] {
				c.fail("panel %q: %s uses $%s, which is no template variable of the dashboard", title, name, v)
			}
		}
	}
	return len(p.Targets)
}
