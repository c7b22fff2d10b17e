/**
 * `levels.signals.v1`: the snapshot Core publishes on `levels.signals` every ~250 ms and the
 * gateway relays unchanged (shape from the service spec, PLAN.md §6.4). The JSON Schema beside
 * this file (`levels_signals_v1.schema.json`) says the same for non-TypeScript consumers.
 *
 * Enumerated fields list the values seen in the spec and our fixtures but accept any string: Core owns the vocabulary,
 * and a new value must not break a dashboard that only displays it.
 */

/** A known value, or any other string Core may add later (keeps editor completion). */
type Open<Known extends string> = Known | (string & Record<never, never>);

export type LevelKind = Open<"STRIKE" | "CALL_WALL" | "PUT_WALL">;
export type LevelDirection = Open<"SUPPORT" | "RESISTANCE">;
export type LevelSignal = Open<"BREAK" | "BOUNCE">;
export type Confidence = Open<"LOW" | "MEDIUM" | "HIGH">;
export type BarrierState = Open<"VACUUM" | "WALL">;
export type MoveDirection = Open<"UP" | "DOWN">;
export type FuelEffect = Open<"AMPLIFY">;
export type RunwayQuality = Open<"CLEAR">;

export interface LevelsSignalsV1 {
  /** When Core built the snapshot, ms since the Unix epoch; snapshots are ordered by it. */
  readonly ts: number;
  readonly spy: SpyQuote;
  readonly levels: readonly Level[];
}

export interface SpyQuote {
  readonly spot: number;
  readonly bid?: number;
  readonly ask?: number;
}

export interface Level {
  /** Stable across snapshots, e.g. `STRIKE_545`: key a table row by it. */
  readonly id: string;
  readonly price: number;
  readonly kind: LevelKind;
  readonly direction: LevelDirection;
  /** Distance from spot, in price units. */
  readonly distance: number;
  /** This snapshot's break score. */
  readonly break_score_raw: number;
  /** The break score smoothed over recent snapshots. */
  readonly break_score_smooth: number;
  readonly signal: LevelSignal;
  readonly confidence: Confidence;
  readonly barrier?: Barrier;
  readonly tape?: Tape;
  readonly fuel?: Fuel;
  readonly runway?: Runway;
  /** Human-readable summary. */
  readonly note?: string;
}

export interface Barrier {
  readonly state: BarrierState;
  readonly delta_liq: number;
  readonly replenishment_ratio: number;
  readonly added: number;
  readonly canceled: number;
  readonly filled: number;
}

export interface Tape {
  readonly imbalance: number;
  readonly buy_vol: number;
  readonly sell_vol: number;
  readonly velocity: number;
  readonly sweep: Sweep;
}

export interface Sweep {
  readonly detected: boolean;
  readonly direction: MoveDirection;
  readonly notional: number;
}

export interface Fuel {
  readonly effect: FuelEffect;
  readonly net_dealer_gamma: number;
  readonly call_wall: number;
  readonly put_wall: number;
  readonly hvl: number;
}

export interface Runway {
  readonly direction: MoveDirection;
  /** `null` when nothing lies ahead. */
  readonly next_obstacle: { readonly id: string; readonly price: number } | null;
  readonly distance: number;
  readonly quality: RunwayQuality;
}
