import { useState } from 'preact/hooks';
import type { SandboxHandle } from '../../../src/sdk/browser.js';
import { ago, bytes, joinPath, parentDir } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

/** Browse the sandbox's files; upload into the directory shown; download a file. */
export function FilesPane({ sb }: { sb: SandboxHandle }) {
  const [dir, setDir] = useState(sb.info.workdir || '/');
  const [typed, setTyped] = useState(dir);
  const entries = useLoad(() => sb.files.list(dir), [sb.id, dir]);
  const act = useAction();
  const go = (d: string): void => {
    setDir(d);
    setTyped(d);
  };
  const upload = async (input: HTMLInputElement): Promise<void> => {
    const files = [...(input.files ?? [])];
    if (files.length === 0) return;
    const ok = await act.run(async () => {
      for (const f of files) await sb.files.write(joinPath(dir, f.name), new Uint8Array(await f.arrayBuffer()));
    });
    input.value = '';
    if (ok) entries.reload();
  };
  const download = (path: string, name: string): void =>
    void act.run(async () => {
      const data = await sb.files.read(path);
      const url = URL.createObjectURL(new Blob([data as BlobPart]));
      const a = document.createElement('a');
      a.href = url;
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    });
  const sorted = [...(entries.data ?? [])].sort((a, b) => Number(b.type === 'dir') - Number(a.type === 'dir') || a.name.localeCompare(b.name));
  return (
    <div>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          go(typed.trim() || '/');
        }}
      >
        <label>
          Directory
          <input value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Open</button>
        <button type="button" disabled={dir === '/'} onClick={() => go(parentDir(dir))}>
          Up
        </button>
        <label>
          Upload file
          <input type="file" multiple disabled={act.busy} onChange={(e) => void upload(e.target as HTMLInputElement)} />
        </label>
      </form>
      <ErrorLine message={entries.error ?? act.error} />
      {entries.data && (
        <table aria-label={`Files in ${dir}`}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Type</th>
              <th scope="col">Size</th>
              <th scope="col">Modified</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {sorted.map((f) => (
              <tr key={f.name}>
                <td>
                  {f.type === 'dir' ? (
                    <button type="button" class="link" onClick={() => go(joinPath(dir, f.name))}>
                      {f.name}/
                    </button>
                  ) : (
                    f.name
                  )}
                </td>
                <td>{f.type}</td>
                <td>{f.type === 'file' ? bytes(f.size) : ''}</td>
                <td>{ago(f.mtime)}</td>
                <td>
                  {f.type === 'file' && (
                    <button type="button" aria-label={`Download ${f.name}`} onClick={() => download(joinPath(dir, f.name), f.name)}>
                      Download
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
