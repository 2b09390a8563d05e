// routegroup-check validates RouteGroups with the Skipper of the kind environment's own code:
// Skipper's RouteGroup validator with advanced validation, which parses every predicate and
// filter as eskip and creates every filter from Skipper's builtin registry (name and
// arguments). A RouteGroup that passes here is one Skipper does not drop for a bad filter.
//
// Input on stdin: a JSON object {"items": [RouteGroup, ...]}. Exit status 1 and the errors on
// stderr when any RouteGroup is invalid (or none was given).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/zalando/skipper/dataclients/kubernetes/definitions"
	"github.com/zalando/skipper/filters/builtin"
	"github.com/zalando/skipper/metrics"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routegroup-check: reading stdin: %v\n", err)
		os.Exit(2)
	}
	list, err := definitions.ParseRouteGroupsJSON(data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routegroup-check: parsing the RouteGroup list: %v\n", err)
		os.Exit(2)
	}
	if len(list.Items) == 0 {
		fmt.Fprintln(os.Stderr, "routegroup-check: no RouteGroup to check")
		os.Exit(1)
	}
	validator := &definitions.RouteGroupValidator{
		FilterRegistry:           builtin.MakeRegistry(),
		Metrics:                  metrics.Default,
		EnableAdvancedValidation: true,
	}
	failed, routes, filters := 0, 0, 0
	for _, rg := range list.Items {
		if err := validator.Validate(rg); err != nil {
			failed++
			name := "?"
			if rg.Metadata != nil {
				name = rg.Metadata.Namespace + "/" + rg.Metadata.Name
			}
			fmt.Fprintf(os.Stderr, "routegroup-check: %s: %v\n", name, err)
			continue
		}
		for _, r := range rg.Spec.Routes {
			routes++
			filters += len(r.Filters)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
	fmt.Printf("routegroup-check: %d RouteGroups valid (%d routes, %d filters), Skipper's validator\n", len(list.Items), routes, filters)
}
