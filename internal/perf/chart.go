package perf

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// errPoints are bar tops with their min–max range, for plotter.YErrorBars.
type errPoints []struct{ x, y, lo, hi float64 }

func (e errPoints) Len() int                    { return len(e) }
func (e errPoints) XY(i int) (float64, float64) { return e[i].x, e[i].y }
func (e errPoints) YError(i int) (float64, float64) {
	return e[i].y - e[i].lo, e[i].hi - e[i].y
}

// WriteChart draws the packet-rate figures as grouped bars (one group per
// configuration, one bar per frame kind and CPU count) with min–max error
// bars, into dir/rates.png.
func (r *Results) WriteChart(dir string) (string, error) {
	type series struct {
		frame string
		cpus  int
	}
	var all []series
	for _, cpus := range []int{1, 2} {
		for _, frame := range []string{FrameUDP, FrameTCP} {
			if r.find(SectionPackets, packetName(ConfigCeiling, frame, cpus)) != nil {
				all = append(all, series{frame, cpus})
			}
		}
	}
	if len(all) == 0 {
		return "", fmt.Errorf("no packet-rate figures to draw")
	}
	p := plot.New()
	p.Title.Text = "Fulcrum packet rate through veth (64-byte frames), median of runs with min–max"
	p.Y.Label.Text = "Mpps delivered"
	p.Y.Min = 0
	// The configurations measured (-perf.configs may leave some out).
	var configs []string
	for _, c := range PacketConfigs {
		for _, f := range r.section(SectionPackets) {
			if f.Config == c {
				configs = append(configs, c)
				break
			}
		}
	}
	p.NominalX(configs...)
	p.Legend.Top = true

	colors := []color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		{R: 0x9e, G: 0xc5, B: 0xe8, A: 0xff},
		{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		{R: 0xf4, G: 0xa5, B: 0xa5, A: 0xff},
	}
	const step = 0.2
	top := 0.0
	for _, f := range r.section(SectionPackets) {
		top = max(top, f.Max)
	}
	p.Y.Max = top * 1.15
	for s, se := range all {
		vals := make(plotter.Values, len(configs))
		var errs errPoints
		offset := (float64(s) - float64(len(all)-1)/2) * step
		for i, c := range configs {
			f := r.find(SectionPackets, packetName(c, se.frame, se.cpus))
			if f == nil {
				continue
			}
			vals[i] = f.Median
			errs = append(errs, struct{ x, y, lo, hi float64 }{float64(i) + offset, f.Median, f.Min, f.Max})
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(14))
		if err != nil {
			return "", err
		}
		bars.XMin = offset
		bars.LineStyle.Width = 0
		bars.Color = colors[s%len(colors)]
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("%s, %d vCPU", se.frame, se.cpus), bars)
		if len(errs) > 0 {
			eb, err := plotter.NewYErrorBars(errs)
			if err != nil {
				return "", err
			}
			p.Add(eb)
		}
	}
	path := filepath.Join(dir, "rates.png")
	if err := p.Save(9*vg.Inch, 5*vg.Inch, path); err != nil {
		return "", err
	}
	return path, nil
}
