import type { SandboxHandle } from '../../../src/sdk/browser.js';
import { useAction } from '../hooks.js';
import { ErrorLine } from './error-line.js';

/** Stop / start / pause / resume / delete, as the sandbox's status allows. */
export function SandboxActions({ sb, onDone }: { sb: SandboxHandle; onDone: () => void }) {
  const act = useAction();
  const s = sb.status;
  const go = (f: () => Promise<unknown>) => () => void act.run(f).then(onDone);
  const label = (verb: string) => `${verb} ${sb.name}`;
  return (
    <span class="actions">
      {s === 'running' && (
        <>
          <button type="button" disabled={act.busy} aria-label={label('Stop')} onClick={go(() => sb.stop())}>
            Stop
          </button>
          <button type="button" disabled={act.busy} aria-label={label('Pause')} onClick={go(() => sb.pause())}>
            Pause
          </button>
        </>
      )}
      {s === 'stopped' && (
        <button type="button" disabled={act.busy} aria-label={label('Start')} onClick={go(() => sb.start())}>
          Start
        </button>
      )}
      {s === 'paused' && (
        <button type="button" disabled={act.busy} aria-label={label('Resume')} onClick={go(() => sb.resume())}>
          Resume
        </button>
      )}
      <button
        type="button"
        class="danger"
        disabled={act.busy || s === 'deleting'}
        aria-label={label('Delete')}
        onClick={() => {
          if (confirm(`Delete sandbox ${sb.name}? Its files are lost.`)) go(() => sb.delete())();
        }}
      >
        Delete
      </button>
      <ErrorLine message={act.error} inline />
    </span>
  );
}
