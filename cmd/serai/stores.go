package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// storesFile parses a file of artifact_store blocks (and nothing else).
func storesFile(path string) ([]smapi.PutArtifactStoreInput, error) {
	p := jobspec.NewParser()
	spec, diags := p.ParseFiles(path)
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = p.WriteDiagnostics(&b, diags)
		return nil, errors.New(strings.TrimSpace(b.String()))
	}
	if n := len(spec.Models) + len(spec.EndpointConfigs) + len(spec.Endpoints); n > 0 {
		return nil, fmt.Errorf("%s: holds %d model, endpoint_config or endpoint block(s); a stores file holds artifact_store blocks only", path, n)
	}
	return translate.FromSpec(spec).Stores, nil
}

func putStoresFile(ctx context.Context, h *api.Handler, path string) error {
	stores, err := storesFile(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return h.PutStores(ctx, stores)
}

// storeCommand is `serai store`: the operator's artifact stores.
func storeCommand() *cli.Command {
	return &cli.Command{
		Name:  "store",
		Usage: "manage artifact stores (operator-owned: put and delete need an operator key)",
		Description: "An artifact store is where model artifacts live and where Vault keeps the keys to read them.\n" +
			"Models name a store; only an operator defines one (serai server --operator-keys), and lists the\n" +
			"access key IDs allowed to name it. Without authentication (serai dev) the caller is the operator.",
		Subcommands: []*cli.Command{
			{
				Name:      "put",
				Usage:     "create or replace the artifact_store blocks of the files (HCL, with allowed_principals)",
				ArgsUsage: "FILE...",
				Flags:     apiFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return cli.Exit("serai store put: give one or more files of artifact_store blocks", exitUsage)
					}
					var all []smapi.PutArtifactStoreInput
					for _, p := range c.Args().Slice() {
						st, err := storesFile(p)
						if err != nil {
							return cli.Exit("serai store put: "+err.Error(), exitUsage)
						}
						all = append(all, st...)
					}
					s, err := newSession(c)
					if err != nil {
						return err
					}
					defer s.cancel()
					for i := range all {
						out, err := s.api.PutArtifactStore(s.ctx, &all[i])
						if err != nil {
							return s.fail(storeErr(all[i].ArtifactStore.Name, err))
						}
						verb := "replaced"
						if out.Created {
							verb = "created"
						}
						s.printf("artifact store %q %s\n", all[i].ArtifactStore.Name, verb)
					}
					return nil
				},
			},
			{
				Name:      "describe",
				Usage:     "show one store",
				ArgsUsage: "NAME",
				Flags:     apiFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("serai store describe: give one store name", exitUsage)
					}
					s, err := newSession(c)
					if err != nil {
						return err
					}
					defer s.cancel()
					d, err := s.api.DescribeArtifactStore(s.ctx, &smapi.DescribeArtifactStoreInput{Name: c.Args().First()})
					if err != nil {
						return s.fail(err)
					}
					if s.json {
						return s.printJSON(d)
					}
					writeStore(s, d)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list the stores this caller may name (all of them for an operator)",
				Flags: apiFlags(),
				Action: func(c *cli.Context) error {
					s, err := newSession(c)
					if err != nil {
						return err
					}
					defer s.cancel()
					l, err := s.api.ListArtifactStores(s.ctx, &smapi.ListArtifactStoresInput{})
					if err != nil {
						return s.fail(err)
					}
					if s.json {
						return s.printJSON(l)
					}
					sort.Slice(l.ArtifactStores, func(i, j int) bool {
						return l.ArtifactStores[i].ArtifactStore.Name < l.ArtifactStores[j].ArtifactStore.Name
					})
					for i := range l.ArtifactStores {
						writeStore(s, &l.ArtifactStores[i])
					}
					return nil
				},
			},
			{
				Name:      "delete",
				Usage:     "delete a store no model or endpoint config names",
				ArgsUsage: "NAME",
				Flags:     apiFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("serai store delete: give one store name", exitUsage)
					}
					s, err := newSession(c)
					if err != nil {
						return err
					}
					defer s.cancel()
					if err := s.api.DeleteArtifactStore(s.ctx, &smapi.DeleteArtifactStoreInput{Name: c.Args().First()}); err != nil {
						return s.fail(storeErr(c.Args().First(), err))
					}
					s.printf("artifact store %q deleted\n", c.Args().First())
					return nil
				},
			},
		},
	}
}

func writeStore(s *session, d *smapi.DescribeArtifactStoreOutput) {
	st := d.ArtifactStore
	endpoint := st.Endpoint
	if endpoint == "" {
		endpoint = "AWS S3"
	}
	where := "secret/serai/stores/" + st.Name
	if v := st.Vault; v != nil {
		switch {
		case v.AWSRole != "":
			mount := v.AWSMount
			if mount == "" {
				mount = "aws"
			}
			where = mount + "/creds/" + v.AWSRole
		case v.KVPath != "" || v.KVMount != "":
			mount, path := v.KVMount, v.KVPath
			if mount == "" {
				mount = "secret"
			}
			if path == "" {
				path = "serai/stores/" + st.Name
			}
			where = mount + "/" + path
		}
	}
	who := strings.Join(d.AllowedPrincipals, ", ")
	if who == "" {
		who = "operators only"
	}
	s.printf("%s\n  endpoint:  %s (region %s, path style %v)\n  keys:      Vault %s\n  allowed:   %s\n", st.Name, endpoint, orDefault(st.Region, "us-east-1"), st.PathStyle, where, who)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// storeErr explains an operator operation refused to a user key.
func storeErr(name string, err error) error {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Type == smapi.ErrAccessDenied {
		return fmt.Errorf("artifact store %q: artifact stores are operator-owned; an operator must create or change it (serai store put with an operator key): %w", name, err)
	}
	return err
}
