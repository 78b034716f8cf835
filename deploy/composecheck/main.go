// Command composecheck loads a compose file the way `docker compose config` does (the
// Compose Specification loader, compose-go, with its JSON-schema validation, interpolation
// and normalisation) and prints the result; it exits non-zero with the loader's message if
// the file is invalid. deploy/check_image.sh uses it where the docker client has no compose
// plugin, as on machines without a Docker engine.
//
//	go run . ../../docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck PATH/docker-compose.yml")
		os.Exit(2)
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	// Every profile, so that services behind one (retrain, producer) are checked too.
	options, err := cli.NewProjectOptions([]string{file}, cli.WithOsEnv,
		cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}))
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fail(err)
	}
	fmt.Print(string(out))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose file invalid: %v\n", err)
	os.Exit(1)
}
