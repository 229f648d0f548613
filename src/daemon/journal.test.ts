import { describe, expect, it } from 'vitest';
import { stderrIsJournal } from './journal.js';

describe('stderrIsJournal', () => {
  const stat = () => ({ dev: 25, ino: 4711 });
  it('is true only when JOURNAL_STREAM names the stream stderr is', () => {
    expect(stderrIsJournal({ JOURNAL_STREAM: '25:4711' }, stat)).toBe(true);
    expect(stderrIsJournal({ JOURNAL_STREAM: '25:4712' }, stat)).toBe(false);
    expect(stderrIsJournal({}, stat)).toBe(false);
    expect(stderrIsJournal({ JOURNAL_STREAM: 'junk' }, stat)).toBe(false);
    expect(stderrIsJournal({ JOURNAL_STREAM: '25:4711' }, () => { throw new Error('EBADF'); })).toBe(false);
  });
});
