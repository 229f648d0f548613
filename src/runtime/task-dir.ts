import { mkdir } from 'node:fs/promises';
import { asPrismError, PrismError } from '../core/errors.js';

/** Where a driver reports a failed cleanup (the drivers' own logger types all have `error`). */
interface ErrorLog {
  error(o: object, msg?: string): void;
}

/**
 * Makes a new task's directory `taskDir` (under `tasksDir`, made when missing) without `recursive`, so
 * that making it claims the task id: ALREADY_EXISTS when a task of that id exists already.
 */
export async function claimTaskDir(tasksDir: string, taskDir: string, id: string): Promise<void> {
  await mkdir(tasksDir, { recursive: true });
  try {
    await mkdir(taskDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new PrismError('ALREADY_EXISTS', `task ${id} already exists`);
    throw asPrismError(e, 'INTERNAL', 'creating task directory');
  }
}

/**
 * Runs a create's `make`; when it fails, `teardown` removes whatever it left (a failing teardown is
 * logged, never thrown in place of the create's error) and the error is thrown as a PrismError.
 */
export async function createOrTeardown<T>(id: string, make: () => Promise<T>, teardown: () => Promise<void>, log?: ErrorLog): Promise<T> {
  try {
    return await make();
  } catch (e) {
    await teardown().catch((te: unknown) => log?.error({ err: te, task: id }, 'cleanup after failed create failed'));
    throw asPrismError(e, 'INTERNAL', `creating task ${id}`);
  }
}
