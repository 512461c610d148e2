// Structured JSON logs (pino: the fastest maintained JSON logger for Node, async-safe writes).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level = process.env.SLUICE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { service: 'sluice' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A logger that writes nothing, for tests and embedded use. */
export const silentLogger: Logger = pino({ level: 'silent' });
