/** Realistic `levels.signals.v1` payloads (shape as in the spec), shared by tests and the bench. */

function level(i: number, seq: number) {
  const price = 540 + i;
  return {
    id: `STRIKE_${price}`,
    price,
    kind: i % 3 === 0 ? "STRIKE" : i % 3 === 1 ? "CALL_WALL" : "PUT_WALL",
    direction: i % 2 === 0 ? "SUPPORT" : "RESISTANCE",
    distance: Number((0.42 + i * 0.5).toFixed(2)),
    break_score_raw: (seq + i * 7) % 100,
    break_score_smooth: (seq + i * 5) % 100,
    signal: i % 2 === 0 ? "BREAK" : "BOUNCE",
    confidence: ["LOW", "MEDIUM", "HIGH"][i % 3],
    barrier: {
      state: i % 2 === 0 ? "VACUUM" : "WALL",
      delta_liq: -8200 + i * 100,
      replenishment_ratio: 0.15,
      added: 3100 + i,
      canceled: 9800 - i,
      filled: 1500 + i,
    },
    tape: {
      imbalance: -0.45,
      buy_vol: 120000 + i * 1000,
      sell_vol: 320000 - i * 1000,
      velocity: -0.08,
      sweep: { detected: i % 2 === 0, direction: "DOWN", notional: 1250000 + i },
    },
    fuel: {
      effect: "AMPLIFY",
      net_dealer_gamma: -185000 + i * 10,
      call_wall: 548,
      put_wall: 542,
      hvl: 545,
    },
    runway: {
      direction: "DOWN",
      next_obstacle: { id: "PUT_WALL", price: 542 },
      distance: 3.0,
      quality: "CLEAR",
    },
    note: "Vacuum + dealers chase; sweep confirms",
  };
}

/** A snapshot carrying its sequence number and publish time (µs); 12 levels ≈ 8 KB. */
export function levelsSignal(seq: number, publishedUs = 0, levels = 12): string {
  return JSON.stringify({
    seq,
    pub_us: publishedUs,
    ts: 1715629300123 + seq * 250,
    spy: { spot: 545.42, bid: 545.41, ask: 545.43 },
    levels: Array.from({ length: levels }, (_, i) => level(i, seq)),
  });
}
