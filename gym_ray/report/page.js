const DATA = JSON.parse(document.getElementById('data').textContent);
const R = DATA.rows, N = R.rollout_id.length, PAGE = 50;
let view = [], page = 0;
const $ = id => document.getElementById(id);
function opts(sel, values){ for (const v of values){ const o=document.createElement('option'); o.value=v; o.textContent=v; sel.appendChild(o);} }
opts($('f-env'), [...new Set(R.env)].sort());
opts($('f-status'), [...new Set(R.status)].sort());
opts($('f-flag'), Object.keys(DATA.checks).filter(c => DATA.checks[c].count > 0));
function applyFilters(){
  const env=$('f-env').value, st=$('f-status').value, task=$('f-task').value.trim().toLowerCase();
  const lo=parseFloat($('f-rmin').value), hi=parseFloat($('f-rmax').value), flag=$('f-flag').value;
  view = [];
  for (let i=0;i<N;i++){
    if (env && R.env[i]!==env) continue;
    if (st && R.status[i]!==st) continue;
    if (task && !R.task_id[i].toLowerCase().includes(task)) continue;
    if (!isNaN(lo) && R.reward[i] < lo) continue;
    if (!isNaN(hi) && R.reward[i] > hi) continue;
    if (flag === '*' ? R.flags[i].length===0 : (flag && !R.flags[i].includes(flag))) continue;
    view.push(i);
  }
  page = 0; render();
}
function cell(tr, text, cls){ const td=document.createElement('td'); td.textContent=text; if(cls) td.className=cls; tr.appendChild(td); }
function render(){
  const body=$('rows'); body.replaceChildren();
  const pages=Math.max(1, Math.ceil(view.length/PAGE));
  for (const i of view.slice(page*PAGE, (page+1)*PAGE)){
    const tr=document.createElement('tr'); tr.dataset.index=i; tr.dataset.rollout=R.rollout_id[i];
    cell(tr,R.env[i]); cell(tr,R.task_id[i]); cell(tr,R.rollout_index[i]); cell(tr,R.segment_index[i]);
    cell(tr,R.status[i]); cell(tr,R.reward[i]); cell(tr,R.num_turns[i]); cell(tr,R.num_tool_calls[i]);
    cell(tr,R.gen_tokens[i]); cell(tr,R.latency[i]===null?'':R.latency[i]); cell(tr,R.flags[i].join(' '),'flag');
    tr.onclick=()=>openRow(i, tr); body.appendChild(tr);
  }
  $('count').textContent = view.length + ' of ' + N + ' rows';
  $('pageinfo').textContent = 'page ' + (page+1) + ' / ' + pages;
}
function esc(s){ return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function tokText(id){ const t = DATA.vocab[id]; return t === undefined ? '\u27e8'+id+'\u27e9' : t; }
function openRow(i, tr){
  document.querySelectorAll('#rows tr.sel').forEach(x=>x.classList.remove('sel')); if (tr) tr.classList.add('sel');
  const key = R.rollout_id[i] + '/' + R.segment_index[i], d = DATA.details[key], box = $('detail');
  box.hidden = false; box.dataset.key = key;
  let h = '<h3>' + esc(R.env[i]) + ' / ' + esc(R.task_id[i]) + ' #' + R.rollout_index[i] + ' segment ' + R.segment_index[i] +
          '</h3><p>rollout <code>' + esc(R.rollout_id[i]) + '</code>, status <b>' + esc(R.status[i]) + '</b>, reward ' + R.reward[i] +
          (R.flags[i].length ? ', <span class="flag">flags: ' + esc(R.flags[i].join(', ')) + '</span>' : '') + '</p>';
  if (!d){ box.innerHTML = h + '<p class="muted" id="nodetail">Not in the report\'s sample: read it with pandas.read_parquet(' +
           esc(JSON.stringify(DATA.run)) + ') where rollout_id == ' + esc(JSON.stringify(R.rollout_id[i])) + '.</p>'; return; }
  if (d.error) h += '<p><b>error</b> (' + esc(d.failure.join(' / ')) + '): ' + esc(d.error) + '</p>';
  h += '<p class="muted">model ' + esc(d.model) + ', policy version ' + d.policy_version + ', attempt ' + d.attempt +
       ', sampling ' + esc(JSON.stringify(d.sampling)) + '</p><h4>Conversation</h4><div id="conversation">';
  for (const m of d.messages){
    let c = m.content || '';
    if (m.tool_calls) c += (c ? '\n' : '') + m.tool_calls.map(t => { const f = t.function || t, a = f.arguments;
      return '\u2192 ' + f.name + '(' + (typeof a === 'string' ? a : JSON.stringify(a)) + ')'; }).join('\n');
    h += '<div class="msg ' + esc(m.role) + '"><div class="role">' + esc(m.role) + (m.name ? ' ' + esc(m.name) : '') + '</div>' + esc(c) + '</div>';
  }
  h += '</div><h4>Tokens</h4><p class="legend"><span class="tok prompt">prompt</span><span class="tok gen">generated (mask 1, ' +
       'shaded by logprob)</span><span class="tok ctx">tool / template (mask 0)</span><span class="fin">finish</span> ' +
       d.prompt.length + ' prompt + ' + d.ids.length + ' response tokens, ' + d.starts.length + ' generation spans</p>' +
       '<label><input type="checkbox" id="show-prompt"> show the prompt tokens</label><div id="tokens"></div>';
  if (R.tree_id[i]) h += treeView(i);
  box.innerHTML = h;
  const tokens = $('tokens');
  function paint(){
    const parts = [];
    if ($('show-prompt').checked) for (const id of d.prompt) parts.push('<span class="tok prompt" title="prompt id ' + id + '">' + esc(tokText(id)) + '</span>');
    const starts = new Set(d.starts), ends = new Map(d.ends.map((e, k) => [e, k]));
    for (let p = 0; p < d.ids.length; p++){
      const id = d.ids[p], gen = d.mask[p] === 1, lp = d.lp[p];
      const style = gen ? ' style="background:rgba(99,102,241,' + Math.min(0.6, (-lp) / 5).toFixed(3) + ')"' : '';
      parts.push('<span class="tok ' + (gen ? 'gen' : 'ctx') + (starts.has(p) ? ' span-start' : '') + '" data-id="' + id +
                 '" data-mask="' + d.mask[p] + '" title="pos ' + p + ' id ' + id + (gen ? ' logprob ' + lp : ' mask 0') + '"' + style + '>' +
                 esc(tokText(id)) + '</span>');
      if (ends.has(p + 1)) parts.push('<span class="fin">' + esc(d.finish[ends.get(p + 1)]) + '</span>');
    }
    tokens.innerHTML = parts.join('');
  }
  $('show-prompt').onchange = paint; paint();
}
// -- tree view: a tree's leaves side by side from the point where they part ------------------------
const TREES = new Map();
for (let j=0;j<N;j++) if (R.tree_id[j]){ const k = R.tree_id[j] + '/' + R.segment_index[j];
  if (!TREES.has(k)) TREES.set(k, []); TREES.get(k).push(j); }
function treeView(i){
  const leaves = TREES.get(R.tree_id[i] + '/' + R.segment_index[i]).slice().sort((a, b) => R.node_id[a] < R.node_id[b] ? -1 : 1);
  const seqs = leaves.map(j => { const d = DATA.details[R.rollout_id[j] + '/' + R.segment_index[j]];
    return d ? {seq: d.prompt.concat(d.ids), mask: d.prompt.map(() => 0).concat(d.mask), n: d.prompt.length} : null; });
  let h = '<h4>Tree <code>' + esc(R.tree_id[i]) + '</code>: ' + leaves.length + ' leaves</h4>';
  if (seqs.includes(null)) return h + '<p class="muted">Not every leaf of this tree is in the report\'s sample.</p>';
  // the prefix every leaf shares: no longer than the shortest common sequence, nor past any leaf's branch point
  let fork = Math.min(...seqs.map(s => s.seq.length), ...leaves.map(j => R.branch_token_offset[j] || Infinity));
  for (let p = 0; p < fork; p++) if (seqs.some(s => s.seq[p] !== seqs[0].seq[p])){ fork = p; break; }
  const toks = (s, from, to) => { let out = ''; for (let p = from; p < to; p++)
    out += '<span class="tok ' + (p < s.n ? 'prompt' : s.mask[p] ? 'gen' : 'ctx') + '" data-id="' + s.seq[p] + '">' + esc(tokText(s.seq[p])) + '</span>';
    return out; };
  h += '<div id="tree-view"><div class="tree-prefix" data-len="' + fork + '"><div class="role">shared prefix after the prompt, generated once (' + (fork - seqs[0].n) +
       ' tokens)</div>' + toks(seqs[0], seqs[0].n, fork) + '</div><div class="branches">';
  leaves.forEach((j, b) => { const s = seqs[b], own = Math.max(fork, R.branch_token_offset[j]);
    h += '<div class="branch' + (j === i ? ' current' : '') + '" data-node="' + esc(R.node_id[j]) + '" data-reward="' + R.reward[j] +
         '" data-from="' + fork + '"><div class="role">node ' + esc(R.node_id[j]) + ' &middot; ' + esc(R.status[j]) + ' &middot; reward ' +
         R.reward[j] + '</div><span class="sib">' + toks(s, fork, own) + '</span>' + toks(s, own, s.seq.length) + '</div>'; });
  return h + '</div></div>';
}
['f-env','f-status','f-flag'].forEach(id => $(id).onchange = applyFilters);
['f-task','f-rmin','f-rmax'].forEach(id => $(id).oninput = applyFilters);
$('prev').onclick = () => { if (page > 0){ page--; render(); } };
$('next').onclick = () => { if ((page+1)*PAGE < view.length){ page++; render(); } };
applyFilters();
