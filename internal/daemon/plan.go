package daemon

import (
	"context"
	"errors"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Plan implements apiserver.Controller.
func (c *controller) Plan(ctx context.Context, data []byte) (api.Plan, error) {
	return api.Plan{}, errors.New("dry run: not implemented yet")
}
