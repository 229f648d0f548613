import { describe, expect, it } from 'vitest';
import { isPrismError } from '../core/errors.js';
import { formatAssignment, parseAssignment, parseEnvFile, setEnvValues } from './env-file.js';

describe('environment file', () => {
  it('takes --env as KEY=VALUE, the value may hold = and be empty; refuses bad names and multi-line values', () => {
    expect(parseAssignment('PRISM_LABELS=zone=a,disk=ssd')).toEqual(['PRISM_LABELS', 'zone=a,disk=ssd']);
    expect(parseAssignment('PRISM_NAME=')).toEqual(['PRISM_NAME', '']);
    for (const bad of ['=x', 'PRISM API=1', '1X=2', 'NOEQUALS', 'A=line\nnext']) {
      let err: unknown;
      try {
        parseAssignment(bad);
      } catch (e) {
        err = e;
      }
      expect(isPrismError(err, 'INVALID_ARGUMENT'), bad).toBe(true);
    }
  });

  it('writes plain values bare and quotes the others so that systemd reads them back unchanged', () => {
    expect(formatAssignment('PRISM_API', '0.0.0.0:8008')).toBe('PRISM_API=0.0.0.0:8008');
    expect(formatAssignment('PRISM_STORE', 'etcd://10.0.0.1:2379,10.0.0.2:2379')).toBe('PRISM_STORE=etcd://10.0.0.1:2379,10.0.0.2:2379');
    const odd = 'a b "c" \\d $HOME `x` #e';
    const line = formatAssignment('X', odd);
    expect(line).toBe('X="a b \\"c\\" \\\\d \\$HOME \\`x\\` #e"');
    expect(parseEnvFile(line)).toEqual({ X: odd });
  });

  it('reads assignments, skipping comments and blank lines; single quotes are literal; the last assignment wins', () => {
    const text = ['# comment', '; also a comment', '', 'PRISM_API=1.2.3.4:8008', "  PRISM_NAME = 'n \\x' ", 'PRISM_LOG_LEVEL="debug"', 'PRISM_API=5.6.7.8:9', 'not an assignment'].join('\n');
    expect(parseEnvFile(text)).toEqual({ PRISM_API: '5.6.7.8:9', PRISM_NAME: 'n \\x', PRISM_LOG_LEVEL: 'debug' });
  });

  it('sets keys in place, keeping comments and other lines, drops later duplicates and appends new keys', () => {
    const text = '# mine\n#PRISM_API=127.0.0.1:8008\nPRISM_API=10.0.0.1:8008\nPRISM_RUNTIME=oci\nPRISM_API=dup:1\n';
    expect(setEnvValues(text, { PRISM_API: '0.0.0.0:8008', PRISM_NAME: 'a b' })).toBe(
      '# mine\n#PRISM_API=127.0.0.1:8008\nPRISM_API=0.0.0.0:8008\nPRISM_RUNTIME=oci\nPRISM_NAME="a b"\n',
    );
    expect(setEnvValues(text, {})).toBe(text);
    expect(setEnvValues('', { A: '1' })).toBe('A=1\n');
  });
});
