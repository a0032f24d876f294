// Hand-written SVG charts: log–log line charts (one line per path, small multiples) and
// 100% stacked bars. Plain SVG 1.1 with a white background, so they read the same in any
// viewer, GitHub's dark mode included.

export interface Point {
  x: number;
  y: number;
}

export interface Series {
  name: string;
  color: string;
  /** stroke-dasharray, e.g. "6 4" for floors. */
  dash?: string;
  marker: 'circle' | 'square' | 'triangle' | 'diamond' | 'none';
  points: Point[];
}

export interface Tick {
  value: number;
  label: string;
}

export interface Panel {
  title: string;
  series: Series[];
}

export interface LineChartSpec {
  title: string;
  subtitle: string;
  xLabel: string;
  yLabel: string;
  xTicks: Tick[];
  /** Formats a y tick value (a power of ten, or 2×/5× one). */
  yFormat: (v: number) => string;
  panels: Panel[];
  /** Panels per row. */
  columns: number;
  panelWidth: number;
  panelHeight: number;
  /** The legend lists these (every series name in any panel, in this order). */
  legend: Series[];
}

const FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\"";

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f = (x: number): string => (Math.round(x * 10) / 10).toString();

function marker(kind: Series['marker'], x: number, y: number, color: string): string {
  const r = 4;
  switch (kind) {
    case 'circle':
      return `<circle cx="${f(x)}" cy="${f(y)}" r="${r}" fill="${color}" stroke="#fff" stroke-width="1"/>`;
    case 'square':
      return `<rect x="${f(x - r)}" y="${f(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}" stroke="#fff" stroke-width="1"/>`;
    case 'triangle':
      return `<path d="M${f(x)},${f(y - r - 1)} L${f(x + r + 1)},${f(y + r)} L${f(x - r - 1)},${f(y + r)} Z" fill="${color}" stroke="#fff" stroke-width="1"/>`;
    case 'diamond':
      return `<path d="M${f(x)},${f(y - r - 1)} L${f(x + r + 1)},${f(y)} L${f(x)},${f(y + r + 1)} L${f(x - r - 1)},${f(y)} Z" fill="${color}" stroke="#fff" stroke-width="1"/>`;
    case 'none':
      return '';
  }
}

/** Decade ticks (and 2×, 5× when the range is short) covering [lo, hi]. */
function logTicks(lo: number, hi: number): { major: number[]; minor: number[] } {
  const major: number[] = [];
  const minor: number[] = [];
  const d0 = Math.floor(Math.log10(lo));
  const d1 = Math.ceil(Math.log10(hi));
  const few = d1 - d0 <= 3;
  for (let d = d0; d <= d1; d++) {
    const p = 10 ** d;
    if (p >= lo * 0.999 && p <= hi * 1.001) major.push(p);
    for (const m of [2, 3, 4, 5, 6, 7, 8, 9]) {
      const v = m * p;
      if (v < lo || v > hi) continue;
      if (few && (m === 2 || m === 5)) major.push(v);
      else minor.push(v);
    }
  }
  return { major: major.sort((a, b) => a - b), minor };
}

/** A log–log line chart, one panel or a grid of panels sharing the y range and a legend. */
export function lineChart(spec: LineChartSpec): string {
  const all = spec.panels.flatMap((p) => p.series.flatMap((s) => s.points)).filter((p) => p.y > 0 && Number.isFinite(p.y));
  const ys = all.map((p) => p.y);
  const yLo = 10 ** Math.floor(Math.log10(Math.min(...ys, 1e9)));
  const yHi = 10 ** Math.ceil(Math.log10(Math.max(...ys, 1)));
  const xs = spec.xTicks.map((t) => t.value);
  const xLo = Math.min(...xs);
  const xHi = Math.max(...xs);

  const margin = { top: 70, left: 78, panelGap: 56, bottom: 58 };
  const rows = Math.ceil(spec.panels.length / spec.columns);
  const panelTitle = spec.panels.length > 1 ? 22 : 0;
  const cellW = spec.panelWidth + margin.panelGap;
  const cellH = spec.panelHeight + panelTitle + margin.bottom;
  const legendX = margin.left + spec.columns * cellW;
  const legendW = 250;
  const width = legendX + legendW;
  const legendH = 40 + spec.legend.length * 22;
  const height = Math.max(margin.top + rows * cellH + 10, margin.top + legendH);

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="20" y="28" font-size="19" font-weight="600" fill="#111">${esc(spec.title)}</text>`,
    `<text x="20" y="50" font-size="13" fill="#555">${esc(spec.subtitle)}</text>`,
  );

  spec.panels.forEach((panel, i) => {
    const col = i % spec.columns;
    const row = Math.floor(i / spec.columns);
    const x0 = margin.left + col * cellW;
    const y0 = margin.top + row * cellH + panelTitle;
    const w = spec.panelWidth;
    const h = spec.panelHeight;
    const sx = (x: number): number =>
      xHi === xLo ? x0 + w / 2 : x0 + ((Math.log10(x) - Math.log10(xLo)) / (Math.log10(xHi) - Math.log10(xLo))) * w;
    const sy = (y: number): number => y0 + h - ((Math.log10(y) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))) * h;
    if (panelTitle > 0) {
      out.push(`<text x="${f(x0 + w / 2)}" y="${f(y0 - 8)}" font-size="14" font-weight="600" text-anchor="middle" fill="#222">${esc(panel.title)}</text>`);
    }
    out.push(`<rect x="${f(x0)}" y="${f(y0)}" width="${w}" height="${h}" fill="#fcfcfc" stroke="#bbb"/>`);
    const ticks = logTicks(yLo, yHi);
    for (const v of ticks.minor) {
      out.push(`<line x1="${f(x0)}" x2="${f(x0 + w)}" y1="${f(sy(v))}" y2="${f(sy(v))}" stroke="#eee"/>`);
    }
    for (const v of ticks.major) {
      out.push(`<line x1="${f(x0)}" x2="${f(x0 + w)}" y1="${f(sy(v))}" y2="${f(sy(v))}" stroke="#d8d8d8"/>`);
      if (col === 0) {
        out.push(`<text x="${f(x0 - 8)}" y="${f(sy(v) + 4)}" font-size="12" text-anchor="end" fill="#333">${esc(spec.yFormat(v))}</text>`);
      }
    }
    for (const t of spec.xTicks) {
      out.push(`<line x1="${f(sx(t.value))}" x2="${f(sx(t.value))}" y1="${f(y0)}" y2="${f(y0 + h)}" stroke="#e4e4e4"/>`);
      out.push(`<text x="${f(sx(t.value))}" y="${f(y0 + h + 18)}" font-size="12" text-anchor="middle" fill="#333">${esc(t.label)}</text>`);
    }
    out.push(`<text x="${f(x0 + w / 2)}" y="${f(y0 + h + 40)}" font-size="13" text-anchor="middle" fill="#222">${esc(spec.xLabel)}</text>`);
    if (col === 0) {
      const cy = y0 + h / 2;
      out.push(`<text transform="translate(${f(x0 - 62)},${f(cy)}) rotate(-90)" font-size="13" text-anchor="middle" fill="#222">${esc(spec.yLabel)}</text>`);
    }
    for (const s of panel.series) {
      const pts = s.points.filter((p) => p.y > 0 && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
      if (pts.length === 0) continue;
      const d = pts.map((p, k) => `${k === 0 ? 'M' : 'L'}${f(sx(p.x))},${f(sy(p.y))}`).join(' ');
      const dash = s.dash !== undefined ? ` stroke-dasharray="${s.dash}"` : '';
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.2"${dash} stroke-linejoin="round"/>`);
      for (const p of pts) out.push(marker(s.marker, sx(p.x), sy(p.y), s.color));
    }
  });

  // Legend
  const lx = legendX + 10;
  let ly = margin.top + 8;
  out.push(`<text x="${lx}" y="${ly}" font-size="13" font-weight="600" fill="#222">Path</text>`);
  ly += 20;
  for (const s of spec.legend) {
    const dash = s.dash !== undefined ? ` stroke-dasharray="${s.dash}"` : '';
    out.push(`<line x1="${lx}" x2="${lx + 34}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2.2"${dash}/>`);
    out.push(marker(s.marker, lx + 17, ly - 4, s.color));
    out.push(`<text x="${lx + 42}" y="${ly}" font-size="12.5" fill="#222">${esc(s.name)}</text>`);
    ly += 22;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface Segment {
  name: string;
  color: string;
}

export interface StackedRow {
  label: string;
  /** Segment values in the order of `segments`; negative values are drawn as 0. */
  values: number[];
  /** Text after the bar (the total). */
  note: string;
}

export interface StackedGroup {
  title: string;
  rows: StackedRow[];
}

/** Horizontal 100%-stacked bars: where one message's time goes, as shares of its total. */
export function stackedBars(spec: {
  title: string;
  subtitle: string;
  segments: Segment[];
  groups: StackedGroup[];
}): string {
  const labelW = 70;
  const barW = 600;
  const noteW = 130;
  const left = 20;
  const rowH = 26;
  const width = left + labelW + barW + noteW + 20;
  let y = 70 + spec.segments.length * 22 + 6;
  const out: string[] = [];
  const body: string[] = [];
  for (const g of spec.groups) {
    body.push(`<text x="${left}" y="${y + 14}" font-size="14" font-weight="600" fill="#222">${esc(g.title)}</text>`);
    y += 24;
    for (const r of g.rows) {
      const vals = r.values.map((v) => (Number.isFinite(v) && v > 0 ? v : 0));
      const total = vals.reduce((a, b) => a + b, 0);
      body.push(`<text x="${left + labelW - 8}" y="${y + rowH / 2 + 4}" font-size="12.5" text-anchor="end" fill="#333">${esc(r.label)}</text>`);
      let x = left + labelW;
      vals.forEach((v, k) => {
        const segW = total > 0 ? (v / total) * barW : 0;
        const seg = spec.segments[k];
        if (segW <= 0 || seg === undefined) return;
        body.push(`<rect x="${f(x)}" y="${y + 3}" width="${f(segW)}" height="${rowH - 6}" fill="${seg.color}"/>`);
        const pct = Math.round((v / total) * 100);
        if (segW > 34) {
          body.push(`<text x="${f(x + segW / 2)}" y="${y + rowH / 2 + 4}" font-size="11.5" text-anchor="middle" fill="#fff">${pct}%</text>`);
        }
        x += segW;
      });
      body.push(`<text x="${left + labelW + barW + 8}" y="${y + rowH / 2 + 4}" font-size="12.5" fill="#222">${esc(r.note)}</text>`);
      y += rowH;
    }
    y += 12;
  }
  const height = y + 10;
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${left}" y="28" font-size="19" font-weight="600" fill="#111">${esc(spec.title)}</text>`,
    `<text x="${left}" y="50" font-size="13" fill="#555">${esc(spec.subtitle)}</text>`,
  );
  spec.segments.forEach((s, k) => {
    const lx = left;
    const ly = 76 + k * 22;
    out.push(`<rect x="${lx}" y="${ly - 11}" width="14" height="14" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 20}" y="${ly}" font-size="12.5" fill="#222">${esc(s.name)}</text>`);
  });
  out.push(...body, '</svg>');
  return out.join('\n') + '\n';
}
